"""The GPU fast path, tested on the CPU: bf16 autocast, channels_last, torch.compile of the step,
no host syncs inside the step loop, and the manifest settings that turn them on (issue "Training
speed", item 2)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
import yaml
from torch import nn

from harness import stage, train as train_module
from harness.config import ManifestError, OptimizerConfig
from harness.config.load import load
from harness.grid.expand import expand
from harness.data.device import DeviceData
from harness.stage import Context
from harness.paths import Paths, read_jsonl
from harness.train import FastPath, current_fast_path, fast_path, make_optimizer, train
from harness.pruning.methods import dense_spec
from tests.conftest import LAMP, ROOT, shrink

DPF = ROOT / "paper_configs" / "dpf.yaml"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
ACC_TOL = 5.0  # the regression check's default tolerance (prunebench report --acc-tol), in points


def _data(n: int = 64) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:32], y[:32], MEAN, STD, 4, "zeros", True)


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _trajectory(fast: FastPath, steps: int = 6) -> tuple[list[float], dict, FastPath]:
    """Per-step losses and the final weights of the small net under ``fast`` (16 images at batch
    16: one step per epoch, so each epoch end's running loss sum gives that step's loss)."""
    model = _small_net()
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.05, weight_decay=5e-4, momentum=0.9), model.parameters())
    sums: list[float] = []

    class Record(train_module.StepHooks):
        def after_epoch(self, epoch, st):
            sums.append(st.loss_sum)

    train(model, _data(16), steps=steps, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=0,
          hooks=Record(), fast=fast)
    losses = [b - a for a, b in zip([0.0, *sums], sums)]
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}, fast


# --------------------------------------------------------------------------- manifest settings


def test_fast_path_settings_default_off_and_enter_the_ids_only_when_on():
    specs = expand(load(LAMP, "ci"))
    s = specs[0]
    assert not s.training.channels_last and not s.training.compile and s.training.precision == "fp32"
    assert not dense_spec(s).channels_last and not dense_spec(s).compile
    for knob in ("channels_last", "compile"):
        on = dataclasses.replace(s, training=dataclasses.replace(s.training, **{knob: True}))
        assert on.id != s.id and dense_spec(on).id != dense_spec(s).id  # the dense model records the switch too
        assert getattr(dense_spec(on), knob)
    bf16 = dataclasses.replace(s, training=dataclasses.replace(s.training, precision="bf16"))
    assert bf16.id != s.id and dense_spec(bf16).id != dense_spec(s).id


def _manifest_with(tmp_path, training: dict, deviations: list[dict] | None = None):
    raw = yaml.safe_load(LAMP.read_text())
    raw["defaults"]["training"].update(training)
    if deviations is not None:
        raw["deviations"] = raw["deviations"] + deviations
    path = tmp_path / "lamp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_fast_path_settings_are_strict_manifest_keys(tmp_path):
    m = load(_manifest_with(tmp_path, {"channels_last": True, "compile": True}), "ci")
    s = expand(m)[0]
    assert s.training.channels_last and s.training.compile and dense_spec(s).compile
    with pytest.raises(ManifestError) as e:
        load(_manifest_with(tmp_path, {"compile": "yes"}), "ci")
    assert "defaults.training.compile: expected true or false" in str(e.value) and "\n" not in str(e.value)


def test_bf16_must_be_named_a_deviation(tmp_path):
    with pytest.raises(ManifestError) as e:
        load(_manifest_with(tmp_path, {"precision": "bf16"}), "ci")
    msg = str(e.value)
    assert "deviations:" in msg and "'bf16_autocast'" in msg and "precision bf16" in msg and "\n" not in msg
    m = load(_manifest_with(tmp_path, {"precision": "bf16"},
                            [{"name": "bf16_autocast", "reason": "bf16 autocast of the forward pass and loss"}]), "ci")
    assert all(s.training.precision == "bf16" for s in expand(m))


# --------------------------------------------------------------------------- numerics of each switch


def test_bf16_autocast_runs_on_the_cpu():
    x = torch.randn(4, 3, 8, 8)
    with train_module.autocast(torch.device("cpu"), "bf16"):
        assert nn.Conv2d(3, 4, 3)(x).dtype == torch.bfloat16
    with train_module.autocast(torch.device("cpu"), "fp32"):
        assert nn.Conv2d(3, 4, 3)(x).dtype == torch.float32


@pytest.mark.parametrize("size", ["reduced", pytest.param("ci", marks=pytest.mark.e2e)])
def test_ci_accuracies_with_bf16_stay_within_the_regression_tolerance(tmp_path, data_root, ci_manifest, size):
    """The LAMP ci cell (VGG-16 width 1/8 on the Fashion-MNIST subset; ``ci``: as the profile says,
    300 pre-training steps, 3 rounds of 60, 1,000-image evaluations, ~2.5 min on 2 cores, marker
    e2e; ``reduced``: 100 steps, 1 round of 20, 500 images) trained in fp32 and with bf16 autocast
    on the CPU: every round's test accuracy within the regression check's tolerance of fp32's."""
    spec = next(s for s in expand(ci_manifest) if s.method == "global" and s.seed == 0)
    if size == "reduced":
        spec = shrink(spec, pretrain="100it", retrain="20it", rounds=1, examples=500)
    bf16 = dataclasses.replace(spec, training=dataclasses.replace(spec.training, precision="bf16"))
    rows = {}
    for name, s in (("fp32", spec), ("bf16", bf16)):
        rows[name] = stage.run_spec(s, Context(paths=Paths(tmp_path / name), data_root=data_root, device="cpu"))
    assert [(r["axis"], r["index"]) for r in rows["bf16"]] == [(r["axis"], r["index"]) for r in rows["fp32"]]
    assert [r["density"] for r in rows["bf16"]] == [r["density"] for r in rows["fp32"]]
    for a, b in zip(rows["fp32"], rows["bf16"]):
        print(f"{size} {a['axis']} {a['index']}: test_acc fp32 {100 * a['test_acc']:.1f}, bf16 {100 * b['test_acc']:.1f}")
        assert abs(100 * a["test_acc"] - 100 * b["test_acc"]) <= ACC_TOL, (a, b)
    assert rows["bf16"][0]["test_acc"] != rows["fp32"][0]["test_acc"] or \
        rows["bf16"][0]["test_loss"] != rows["fp32"][0]["test_loss"]  # bf16 did run: the numbers moved


def test_channels_last_follows_the_default_trajectory():
    base, w0, _ = _trajectory(FastPath())
    nhwc, w1, _ = _trajectory(FastPath(channels_last=True))
    assert nhwc == pytest.approx(base, rel=1e-4, abs=1e-5)
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-5)
        if w1[n].dim() == 4:
            assert w1[n].is_contiguous(memory_format=torch.channels_last)


def _compile_works() -> str | None:
    """Why torch.compile cannot run here (None when it can): the CPU backend needs a C++ compiler."""
    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return "torch.compile's CPU backend (inductor) needs a C++ compiler (g++ / clang++) on PATH"
    try:
        f = torch.compile(lambda t: t * 2 + 1, dynamic=False)
        f(torch.ones(2))
    except Exception as e:  # noqa: BLE001 - any backend failure means: cannot compile here
        return f"torch.compile does not work on this machine: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def test_compiled_step_follows_the_eager_trajectory_and_reports_its_compile_time():
    why = _compile_works()
    if why is not None:
        pytest.skip(why)
    base, w0, _ = _trajectory(FastPath())
    compiled, w1, fast = _trajectory(FastPath(compile=True))
    assert compiled == pytest.approx(base, rel=1e-4, abs=1e-5)
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-5)
    assert fast.compile_s > 0


def test_fast_path_context_reaches_training_and_evaluation():
    assert current_fast_path() == FastPath()
    model, data = _small_net(), _data()
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.05, weight_decay=0.0), model.parameters())
    with fast_path(channels_last=True) as fp:
        assert current_fast_path() is fp
        train(model, data, steps=2, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=0)
        acc, loss = train_module.evaluate(model, data.eval_batches("test", 16))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert current_fast_path() == FastPath() and 0 <= acc <= 1 and loss > 0


# --------------------------------------------------------------------------- whole runs


def _no_compile(monkeypatch):
    """torch.compile as the identity: the compiled path's bookkeeping without the compiler's minutes."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)


@pytest.mark.parametrize("manifest,method", [(LAMP, "lamp"), (DPF, "dsr")])
def test_whole_runs_under_the_fast_path_match_the_default_path(tmp_path, data_root, monkeypatch, manifest, method):
    """An iterative LAMP run and a DSR run (regrowth writes into the weights in place) with
    channels_last and the compiled-step path on: the same rows and densities as the default path, the
    compile time on the final row (reported and in rows.jsonl) and in the dense model's train.json.
    LAMP's accuracies agree closely; the DPF ci recipe (lr 0.2 at batch 32) is chaotic enough that
    the last-digit differences of NHWC kernels change which weights DSR regrows, so its accuracies
    are not compared."""
    _no_compile(monkeypatch)
    m = load(manifest, "ci")
    spec = next(s for s in expand(m) if s.method == method and s.seed == 0)
    if spec.procedure == "iterative":
        spec = shrink(spec)
    else:  # DPF ci cut to 1 epoch of 16 steps, DSR rewiring every 8 (after iteration 8: one re-allocation)
        spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="1ep"),
                                   eval=dataclasses.replace(spec.eval, train_examples=64, test_examples=100),
                                   params=dataclasses.replace(spec.params, update_every="8it"))
    fast = dataclasses.replace(spec, training=dataclasses.replace(spec.training, channels_last=True, compile=True))
    ctx = lambda name, rows=None: Context(paths=Paths(tmp_path / name), data_root=data_root, device="cpu",  # noqa: E731
                                          report=rows.append if rows is not None else (lambda r: None))
    base = stage.run_spec(spec, ctx("base"))
    reported: list[dict] = []
    rows = stage.run_spec(fast, ctx("fast", reported))
    assert [(r["axis"], r["index"]) for r in rows] == [(r["axis"], r["index"]) for r in base]
    for a, b in zip(base, rows):
        assert b["density"] == a["density"]
        if spec.procedure == "iterative":
            assert b["test_acc"] == pytest.approx(a["test_acc"], abs=0.03)
    assert rows[-1]["compile_s"] > 0 and "compile_s" not in base[-1]
    assert reported[-1]["compile_s"] == rows[-1]["compile_s"]
    assert read_jsonl(Paths(tmp_path / "fast").run_dir(spec.paper, fast.id) / "rows.jsonl")[-1]["compile_s"] > 0
    if spec.procedure != "iterative":
        assert rows[-1]["reactivated_total"] > 0  # DSR regrew weights in the NHWC model
    if dense_spec(fast) is not None:
        import json

        assert json.loads((Paths(tmp_path / "fast").dense_dir(dense_spec(fast).id) / "train.json").read_text())["compile_s"] > 0


# --------------------------------------------------------------------------- no host syncs


def test_no_host_sync_inside_the_step_loop(monkeypatch):
    """Between divergence checks (every CHECK_EVERY steps) the loop never reads a tensor's value on
    the host: no item(), float(), int() or bool() of a tensor other than the optimizer's own CPU step
    counters (which stay on the host on a GPU too)."""
    model, data = _small_net(), _data(n=16 * 30)
    opt = make_optimizer(OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8),
                         model.parameters())
    reads: list[str] = []

    def watch(name):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, **k):
            if not any(self is st.get("step") for st in opt.state.values()):
                reads.append(name)
            return real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    class Marks(train_module.StepHooks):
        def after_optimizer_step(self, step):
            reads.append(f"step {step}")

    for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist"):
        watch(name)
    steps = train_module.CHECK_EVERY + 3
    train(model, data, steps=steps, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=0, hooks=Marks())
    monkeypatch.undo()
    syncing = [i for i, r in enumerate(reads) if not r.startswith("step ")]
    steps_before = [sum(r.startswith("step ") for r in reads[:i]) for i in syncing]
    # only the divergence check after step CHECK_EVERY and the final check read values
    assert set(steps_before) <= {train_module.CHECK_EVERY, steps}, steps_before
