"""AP (ap.md): the cycles procedure with its one AP modifier, the warm-up/fixed LR schedule, the AP
initialiser and the harness-defined dead-neuron rate, on real (tiny) computations."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from harness import metrics
from harness.config import expand, load
from harness.config.schema import LRScheduleConfig
from harness.experiment import Context, Interrupted, get_data
from harness.experiment import run as run_spec
from harness.models import build_model
from harness.paths import Paths, read_jsonl
from harness.pruning.masks import MaskHook, MaskSet
from harness.pruning.methods import ap
from harness.train import make_optimizer, make_scheduler, stage_seed, train, warmup_fixed_lr

AP_YAML = Path(__file__).resolve().parent.parent / "paper_configs" / "ap.yaml"

FULL = LRScheduleConfig("warmup_fixed", warmup_per_iter=5.0e-6, warmup_iters=20000, fixed=((25, 0.01), (32, 0.001)))


# ----------------------------------------------------------------------------- LR schedule


def test_warmup_fixed_values_at_breakpoints():
    lr = warmup_fixed_lr(FULL, 782)
    assert lr(0) == 0.0  # starts at 0
    assert lr(10000) == pytest.approx(0.05)  # mid warm-up: 0.1 / 20,000 per iteration
    assert lr(782 * 25 - 1) == pytest.approx(782 * 25 * 5e-6 - 5e-6)  # last step of epoch 24: the peak, ~0.0977
    assert lr(782 * 25) == pytest.approx(0.01)  # first step of 0-based epoch 25
    assert lr(782 * 32 - 1) == pytest.approx(0.01)
    assert lr(782 * 32) == pytest.approx(0.001)  # first step of 0-based epoch 32
    assert lr(782 * 50 - 1) == pytest.approx(0.001)
    # off by one at either boundary must show
    assert lr(782 * 25 - 1) != pytest.approx(0.01) and lr(782 * 32 - 1) != pytest.approx(0.001)
    # the warm-up's end (without overrides): holds at warmup_per_iter * warmup_iters
    plain = warmup_fixed_lr(dataclasses.replace(FULL, fixed=()), 782)
    assert plain(19999) == pytest.approx(0.099995) and plain(20000) == pytest.approx(0.1) == plain(30000)


def test_warmup_fixed_scheduler_steps_per_iteration_and_restarts():
    cfg = LRScheduleConfig("warmup_fixed", warmup_per_iter=0.00625, warmup_iters=16, fixed=((2, 0.01), (3, 0.001)))
    expected = [0.00625 * i for i in range(16)] + [0.01] * 8 + [0.001] * 8  # the ci schedule, 8 steps per epoch
    for _ in range(2):  # a new training gets a new scheduler: it starts over at 0
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make_scheduler(opt, cfg, 8)
        seen = []
        for _ in range(32):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        make_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0), cfg, 8)


# ----------------------------------------------------------------------------- init and dead neurons


def test_ap_xavier_init():
    torch.manual_seed(0)
    m = build_model("resnet20_cifar_optb", 10, 1.0, "ap_xavier")
    assert sum(p.numel() for p in m.parameters()) == 272474
    gammas = torch.cat([b.weight.detach() for b in m.modules() if isinstance(b, nn.BatchNorm2d)])
    assert gammas.numel() == 784 and abs(float(gammas.mean()) - 1) < 0.01 and 0.01 < float(gammas.std()) < 0.03
    assert all(float(b.bias.detach().abs().max()) == 0 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert 0.5 < float(m.fc.bias.detach().std()) < 1.8  # N(0, 1), 10 draws
    conv = m.layer3[0].conv1.weight  # xavier normal: std sqrt(2 / (fan_in + fan_out))
    assert float(conv.detach().std()) == pytest.approx(math.sqrt(2 / (32 * 9 + 64 * 9)), rel=0.1)
    assert len(MaskSet.for_model(m, "all_weights").params) == 43  # ap.md 4.1: 43 maskable tensors, 271,680 entries
    assert sum(p.numel() for p in MaskSet.for_model(m, "all_weights").params.values()) == 271680


def test_dead_neuron_rate_of_a_hand_made_network():
    first, second = nn.Linear(3, 4), nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.zero_()
        first.bias.copy_(torch.tensor([1.0, -1.0, 2.0, -3.0]))  # units 1 and 3 never fire
        second.weight.zero_()
        second.bias.copy_(torch.tensor([-1.0, -0.5, 0.5]))  # units 0 and 1 never fire
    net = nn.Sequential(first, nn.ReLU(), second, nn.ReLU())
    batches = [(torch.randn(5, 3), torch.zeros(5, dtype=torch.long)) for _ in range(3)]
    overall, layers = metrics.dead_neuron_rate(net, batches)
    assert layers == {"1": 0.5, "3": 2 / 3}
    assert overall == 4 / 7  # (2 + 2) dead units of 7, every image
    assert net.training  # mode restored
    assert metrics.dead_neuron_rate(nn.Linear(3, 2), batches) != metrics.dead_neuron_rate(net, batches)


def test_every_relu_site_of_resnet20_is_its_own_module():
    m = build_model("resnet20_cifar_optb", 10, 0.25, "ap_xavier")
    calls: dict[str, int] = {}
    for name, mod in m.named_modules():
        if isinstance(mod, nn.ReLU):
            mod.register_forward_hook(lambda mod, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    m(torch.randn(2, 3, 32, 32))
    assert len(calls) == 19 and set(calls.values()) == {1}  # stem + 2 per block x 9, each called once


# ----------------------------------------------------------------------------- runs


def tiny(spec, **params):
    """The ci spec, smaller still: 32 train images (2 steps per epoch at batch 16), a 1-epoch cycle 0, 2-epoch trainings."""
    ds = dataclasses.replace(spec.dataset, train_subset=32, test_subset=32)
    return dataclasses.replace(
        spec, dataset=ds,
        training=dataclasses.replace(spec.training, batch_size=16, pretrain="1ep", retrain="2ep"),
        eval=dataclasses.replace(spec.eval, batch_size=32, train_examples=32, test_examples=32),
        params=dataclasses.replace(spec.params, cycles=2, **params))


@pytest.fixture(scope="module")
def ap_specs():
    m = load(AP_YAML, profile="ci")
    return {s.method: tiny(s) for s in expand(m) if s.seed == 0}


@pytest.fixture(scope="module")
def full_run(ap_specs, data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("ap_full")
    spec = ap_specs["global_mag_ap"]
    rows = run_spec(spec, Context(paths=Paths(root), data_root=data_root, device="cpu"))
    return spec, root, rows


def trained_model(spec, data_root, steps=4):
    """A tiny model trained a few masked steps from its init on the real ci data; (model, masks, init)."""
    ctx = Context(paths=Paths(Path("/nonexistent")), data_root=data_root, device="cpu")
    data = get_data(spec.dataset, ctx)
    torch.manual_seed(0)
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
    masks = MaskSet.for_model(model, spec.prunable)
    init = {n: p.detach().clone() for n, p in masks.params.items()}
    opt = make_optimizer(spec.training.optimizer, model.parameters())
    train(model, data, steps=steps, optimizer=opt, scheduler=None, batch_size=16, drop_last=False,
          seed=stage_seed(0, "t"), hooks=MaskHook(masks))
    return model, masks, init


@pytest.mark.parametrize("score", ["magnitude", "lamp"])
def test_prune_cycle_removes_18_plus_2_percent_negative_small_movement(ap_specs, data_root, monkeypatch, score):
    spec = ap_specs["global_mag_ap"]
    model, masks, init = trained_model(spec, data_root)
    masks.prune_("magnitude", "global", 0.3)  # start from a pruned mask: counts are of the alive entries
    before = {n: m.clone() for n, m in masks.masks.items()}
    theta_t = {n: p.detach().clone() for n, p in masks.params.items()}
    calls = []
    real = ap.ap_step
    monkeypatch.setattr(ap, "ap_step", lambda *a: calls.append(a[2]) or real(*a))
    stats, gone = ap.prune_cycle(masks, score, "global", 0.18, 0.02, init)
    alive = sum(int(m.sum()) for m in before.values())
    n_ap = int(0.02 * alive)  # counted before the base step
    assert calls == [n_ap]  # one AP code path, whatever the base score
    assert stats["alive_before"] == alive and stats["n_ap"] == n_ap == stats["ap_removed"] and not stats["ap_guarded"]
    assert stats["base_pruned"] == round(0.18 * alive)
    now = sum(int(m.sum()) for m in masks.masks.values())
    assert now == alive - round(0.18 * alive) - n_ap and abs(stats["pruned_fraction"] - 0.2) < 0.002
    assert sum(int(g.sum()) for g in gone.values()) == n_ap
    cand_delta, gone_delta = [], []
    for n, g in gone.items():
        assert bool((theta_t[n][g] < 0).all())  # every AP-removed weight was negative at the end of training
        assert bool(before[n][g].all()) and not bool(masks.masks[n][g].any())
        assert float(masks.params[n].detach()[~masks.masks[n]].abs().sum()) == 0  # applied
        delta = (theta_t[n] - init[n]).abs()
        gone_delta.append(delta[g])
        cand_delta.append(delta[masks.masks[n] & (theta_t[n] < 0)])  # candidates that survived
    assert float(torch.cat(gone_delta).max()) <= float(torch.cat(cand_delta).min())  # the smallest movements


def test_ap_step_guard_removes_every_candidate():
    w = nn.Parameter(torch.tensor([[-1.0, 2.0, -3.0, 4.0]]))
    masks = MaskSet({"w": w})
    stats, gone = ap.ap_step(masks, {"w": torch.zeros(1, 4)}, n_ap=3)
    assert stats == {"ap_candidates": 2, "ap_removed": 2, "ap_guarded": 1.0}
    assert gone["w"].tolist() == [[True, False, True, False]] and masks.masks["w"].tolist() == [[False, True, False, True]]
    # ties by lower index, exactly n_ap
    w2 = nn.Parameter(torch.tensor([-1.0, -1.0, -1.0, 5.0]))
    m2 = MaskSet({"w": w2})
    s2, g2 = ap.ap_step(m2, {"w": torch.zeros(4)}, n_ap=2)
    assert s2["ap_removed"] == 2 and g2["w"].tolist() == [True, True, False, False]


def test_lt_rewinds_to_a_copy_of_the_original_init(ap_specs):
    spec = ap_specs["lth_ap"]
    assert spec.params.mode == "lt"
    original = {"a": torch.ones(2)}
    got = ap.Cycles().cycle_init(spec, 3, original, torch.device("cpu"))
    got["a"].add_(1)
    assert torch.equal(original["a"], torch.ones(2))  # copied, not aliased (ap_bias_reset_copy)
    re = ap.Cycles().cycle_init(ap_specs["global_mag_ap"], 1, original, torch.device("cpu"))
    again = ap.Cycles().cycle_init(ap_specs["global_mag_ap"], 1, original, torch.device("cpu"))
    other = ap.Cycles().cycle_init(ap_specs["global_mag_ap"], 2, original, torch.device("cpu"))
    assert all(torch.equal(re[k], again[k]) for k in re)  # per-cycle seeded stream
    assert not torch.equal(re["conv1.weight"], other["conv1.weight"])


def test_run_rows_densities_and_exact_masks(full_run):
    spec, root, rows = full_run
    assert [(r["axis"], r["index"]) for r in rows] == [("round", 0), ("round", 1), ("round", 2), ("final", 0)]
    assert rows[0]["density"] == 1.0 and 0 <= rows[0]["dead_neuron_rate"] <= 1
    for k in (1, 2):
        r = rows[k]
        assert r["density"] == pytest.approx(0.8 ** k, rel=0.01)
        assert r["density_conv_linear"] < r["density"] < r["density_all_params"] < 1  # BN gamma and biases stay
        assert r["n_ap"] == int(0.02 * r["alive_before"]) == r["ap_removed"]
        assert r["base_pruned"] == round(0.18 * r["alive_before"])
        assert r["masked_nonzero"] == 0  # the recorded retraining ends with exactly m_k
        assert [e["epoch"] for e in r["epochs"]] == [1, 2] and r["test_acc"] == r["epochs"][-1]["test_acc"]
        assert len(r["dnr_layers"]) == 19 and 0 <= r["dead_neuron_rate"] <= 1
    assert rows[-1]["dead_neuron_rate"] == rows[-2]["dead_neuron_rate"] and "epochs" not in rows[-1]
    d = Paths(root).run_dir("ap", spec.id)
    csv_lines = (d / "ap_epochs.csv").read_text().splitlines()
    assert csv_lines[0].startswith("cycle,epoch,steps,test_acc") and "dnr/relu" in csv_lines[0]
    assert [line.split(",")[:2] for line in csv_lines[1:]] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"]]
    ck = torch.load(d / "checkpoint.pt")
    for n, m in ck["masks"].items():
        assert float(ck["model"][n][~m].abs().sum()) == 0


def test_killed_run_resumes_at_its_next_cycle_and_ends_identical(full_run, data_root, tmp_path, monkeypatch):
    spec, root, rows = full_run
    ctx = dict(data_root=data_root, device="cpu")
    with pytest.raises(Interrupted):
        run_spec(spec, Context(paths=Paths(tmp_path), stop_after=("round", 1), **ctx))
    trainings = []
    real = ap.train
    monkeypatch.setattr(ap, "train", lambda *a, **k: trainings.append(k["seed"]) or real(*a, **k))
    replayed: list[dict] = []
    resumed = run_spec(spec, Context(paths=Paths(tmp_path), report=replayed.append, **ctx))
    assert trainings == [stage_seed(spec.seed, f"cycles/cycle2/{s}") for s in ("train", "retrain")]  # cycle 2 only
    assert [r["index"] for r in replayed] == [0, 1, 2, 0]
    assert resumed == rows  # every metric of every cycle
    assert read_jsonl(Paths(tmp_path).run_dir("ap", spec.id) / "rows.jsonl") == rows
    a = torch.load(Paths(root).run_dir("ap", spec.id) / "checkpoint.pt")
    b = torch.load(Paths(tmp_path).run_dir("ap", spec.id) / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])


def test_plain_base_method_is_the_same_procedure_without_ap(ap_specs):
    plain, with_ap = ap_specs["global_mag"], ap_specs["global_mag_ap"]
    assert plain.procedure == with_ap.procedure == "cycles" and plain.score == with_ap.score == "magnitude"
    assert (plain.params.base_rate, plain.params.ap_rate) == (0.2, 0.0)
    assert (with_ap.params.base_rate, with_ap.params.ap_rate) == (0.18, 0.02)
    lamp = ap_specs["lamp_cyc_ap"]
    assert lamp.procedure == "cycles" and lamp.score == "lamp" and lamp.params.ap_rate == 0.02
    assert ap_specs["lth"].params.mode == "lt" and plain.params.mode == "reinit"
    assert plain.training.lr_schedule.name == "warmup_fixed" and plain.model.init == "ap_xavier"


def test_full_manifest_encodes_the_sheet():
    specs = expand(load(AP_YAML))
    assert len(specs) == 8 * 10 and {s.seed for s in specs} == set(range(10))
    s = next(x for x in specs if x.method == "global_mag_ap")
    t = s.training
    assert s.params.cycles == 24 and s.prunable == "all_weights" and s.model.arch == "resnet20_cifar_optb"
    assert s.dataset.std == (0.2023, 0.1994, 0.2010) and s.dataset.pad_mode == "zeros" and s.dataset.hflip
    assert (t.batch_size, t.drop_last, t.pretrain, t.retrain) == (64, False, "50ep", "50ep")
    assert (t.optimizer.name, t.optimizer.momentum, t.optimizer.weight_decay) == ("sgd", 0.9, 5e-4)
    assert t.lr_schedule == FULL
    assert {x.method: x.params.mode for x in specs} == {"global_mag": "reinit", "global_mag_ap": "reinit", "lth": "lt",
                                                        "lth_ap": "lt", "lamp_cyc": "reinit", "lamp_cyc_ap": "reinit",
                                                        "dpf_cyc": "reinit", "dpf_cyc_ap": "reinit"}
    dpf = next(x for x in specs if x.method == "dpf_cyc_ap").params
    assert (dpf.decision, dpf.dpf_update_every, dpf.dpf_end, dpf.base_rate, dpf.ap_rate) == ("dpf", 16, "32ep", 0.18, 0.02)
    assert {x.params.decision for x in specs if not x.method.startswith("dpf")} == {"masked"}


def test_dpf_base_trains_with_feedback_then_ap_removes_from_its_mask(ap_specs, data_root, tmp_path, monkeypatch):
    """DPF as the base (decision "dpf"): the cycle's first training re-selects the mask over all entries (entries
    pruned in the previous cycle may come back), ends at exactly alive - round(0.18 alive), then AP removes n_ap
    (counted before the base step) negative entries; the recorded retraining ends with exactly that mask."""
    spec = ap_specs["dpf_cyc_ap"]
    assert (spec.params.decision, spec.params.dpf_update_every, spec.params.dpf_end) == ("dpf", 4, "3ep")
    spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, dpf_update_every=1, dpf_end="1ep"))
    hooks, selections = [], []
    real_train, real_select = ap.train, MaskSet.select_
    monkeypatch.setattr(ap, "train", lambda *a, **k: hooks.append(type(k["hooks"]).__name__) or real_train(*a, **k))

    def select(self, *a, **k):
        out = real_select(self, *a, **k)
        selections.append((k.get("eligible"), k.get("density"), out["regrown"]))
        return out

    monkeypatch.setattr(MaskSet, "select_", select)
    rows = run_spec(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    # per cycle: the DPF decision training, then the masked recorded retraining (MaskHook + epoch evaluation)
    assert hooks == ["CubicMaskHook", "HookChain", "CubicMaskHook", "HookChain"]
    n = sum(int(m.numel()) for m in MaskSet.for_model(build_model(spec.model.arch, spec.num_classes, spec.model.width),
                                                       spec.prunable).masks.values())
    assert all(e == "all" for e, _, _ in selections)  # DPF re-selects over all entries, never nested
    for k in (1, 2):
        r = rows[k]
        alive = r["alive_before"]
        assert r["base_pruned"] == round(0.18 * alive) and r["n_ap"] == int(0.02 * alive) == r["ap_removed"]
        assert round(r["density"] * n) == alive - round(0.18 * alive) - int(0.02 * alive)
        assert r["masked_nonzero"] == 0 and r["dpf_mask_updates"] == 2 + 1  # steps 0 and 1 of 2-step epoch 1, + final
    assert rows[2]["dpf_regrown"] > 0  # the feedback brought back entries cycle 1 had pruned
    cycle2 = [d for _, d, _ in selections[3:]]
    assert cycle2[-1] * n == pytest.approx(rows[1]["density"] * n - round(0.18 * rows[2]["alive_before"]), abs=1e-6)
