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
from harness.data import DeviceData
from harness.experiment import Context, Interrupted, get_data
from harness.experiment import run as run_spec
from harness.models import build_model
from harness.paths import Paths, read_jsonl
from harness.pruning.masks import MaskHook, MaskSet
from harness.pruning.methods import ap
from harness.train import HookChain, StepHooks, make_optimizer, make_scheduler, stage_seed, train, warmup_fixed_lr

AP_YAML = Path(__file__).resolve().parent.parent / "paper_configs" / "ap.yaml"

FULL = LRScheduleConfig("warmup_fixed", warmup_per_iter=5.0e-6, warmup_iters=20000, fixed=((25, 0.01), (32, 0.001)))


# ----------------------------------------------------------------------------- LR schedule


def _code_lrs(steps: int, steps_per_epoch: int, per_iter: float, warmup_iters: int, fixed) -> list[float]:
    """The released code's per-iteration LR, its arithmetic (resnet_20.py:143-145, 171, 239-253): before every
    step the count goes up, the running float gets ``per_iter`` added while the count is <= warmup_iters, and an
    override epoch sets the absolute value."""
    out, lr, count = [], 0.0, 0
    for i in range(steps):
        count += 1
        if count <= warmup_iters:
            lr = lr + per_iter
        for e, v in fixed:
            if i // steps_per_epoch >= e:
                lr = v
        out.append(lr)
    return out


def test_warmup_fixed_values_at_breakpoints():
    lr = warmup_fixed_lr(FULL, 782)
    assert lr(0) == 5e-6  # the first step already trains at one increment (the code adds before every step)
    assert lr(1) == 1e-5
    assert lr(9999) == pytest.approx(0.05)  # 10,000 increments of 0.1 / 20,000
    peak = 782 * 25 * 5e-6  # 19,550 increments: the last step of epoch 24, ~0.09775
    assert lr(782 * 25 - 1) == pytest.approx(peak) and lr(782 * 25 - 2) == pytest.approx(peak - 5e-6)
    assert lr(782 * 25) == 0.01  # first step of 0-based epoch 25 (0.1 / 10 in the code: the same double)
    assert lr(782 * 32 - 1) == 0.01
    assert lr(782 * 32) == 0.001  # first step of 0-based epoch 32
    assert lr(782 * 50 - 1) == 0.001
    # off by one at either override boundary must show
    assert lr(782 * 25 - 1) != pytest.approx(0.01) and lr(782 * 32 - 1) != pytest.approx(0.001)
    # the warm-up's end (without overrides): 20,000 increments at step 19,999, then it holds
    plain = warmup_fixed_lr(dataclasses.replace(FULL, fixed=()), 782)
    assert plain(19998) == pytest.approx(0.099995) and plain(19999) == pytest.approx(0.1)
    assert plain(19999) == plain(20000) == plain(30000) and plain(19998) < plain(19999)
    # every step of the full profile's training (39,100 steps), the code's running float bit for bit
    assert [lr(i) for i in range(782 * 50)] == _code_lrs(782 * 50, 782, 5e-6, 20000, [(25, 0.01), (32, 0.001)])
    assert [plain(i) for i in range(25000)] == _code_lrs(25000, 782, 5e-6, 20000, [])


def test_warmup_fixed_scheduler_steps_per_iteration_and_restarts():
    cfg = LRScheduleConfig("warmup_fixed", warmup_per_iter=0.00625, warmup_iters=16, fixed=((2, 0.01), (3, 0.001)))
    # the ci schedule, 8 steps per epoch: steps 0..15 at (i + 1) * 0.1 / 16 (step 15 at 0.1), then the overrides
    expected = _code_lrs(32, 8, 0.00625, 16, [(2, 0.01), (3, 0.001)])
    assert expected[:16] == pytest.approx([0.00625 * (i + 1) for i in range(16)]) and expected[15] == pytest.approx(0.1)
    assert expected[16:] == [0.01] * 8 + [0.001] * 8
    for base in (0.1, 0.0):  # a new training gets a new scheduler: it starts over; the optimizer's lr plays no part
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
        sched = make_scheduler(opt, cfg, 8)
        seen = []
        for _ in range(32):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == expected  # exactly


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


def _hand_made_net() -> nn.Sequential:
    """Image -> Linear(3072, 4) -> ReLU -> Linear(4, 3) -> ReLU -> Linear(3, 10), all weights 0: every ReLU output is
    its bias, so which units are dead is known (units 1 and 3 of the first site, 0 and 1 of the second)."""
    first, second, head = nn.Linear(3 * 32 * 32, 4), nn.Linear(4, 3), nn.Linear(3, 10)
    with torch.no_grad():
        for lin in (first, second, head):
            lin.weight.zero_()
        first.bias.copy_(torch.tensor([1.0, -1.0, 2.0, -3.0]))
        second.bias.copy_(torch.tensor([-1.0, -0.5, 0.5]))
        head.bias.zero_()
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), second, nn.ReLU(), head)


def test_dead_neuron_meter_counts_the_training_batches_of_each_epoch():
    """The dynamic DNR (ap.md 1.1) on a hand-made network trained at LR 0 (the weights stay as made): per epoch, over
    the training batches only (10 images at batch 4: batches of 4, 4 and the partial 2), eval-mode passes between
    epochs not counted, the counters reset at every read."""
    net = _hand_made_net()
    data = DeviceData(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.zeros(10, dtype=torch.long),
                      torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                      (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 0, "zeros", False)
    reads = []

    class PerEpoch(StepHooks):
        def after_epoch(self, epoch, st):
            reads.append(meter.read())
            metrics.dead_neuron_rate(net, [(torch.zeros(3, 3, 32, 32), None)])  # eval mode: not counted
            if epoch == 1:
                with torch.no_grad():
                    net[1].bias[0] = -1.0  # a third unit of the first site dies from epoch 2 on

    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    with metrics.DeadNeuronMeter(net) as meter:
        assert [n for n, _ in meter.sites] == ["2", "4"]
        train(net, data, steps=6, optimizer=opt, scheduler=None, batch_size=4, drop_last=False, seed=0,
              hooks=PerEpoch())
        nothing = meter.read()  # nothing since the last read
        assert math.isnan(nothing[0]) and nothing[1] == {}
    assert reads == [(4 / 7, {"2": 0.5, "4": 2 / 3}), (5 / 7, {"2": 0.75, "4": 2 / 3})]
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed on exit
    no_relu = metrics.DeadNeuronMeter(nn.Linear(2, 2))
    assert no_relu.sites == [] and math.isnan(no_relu.read()[0])


def test_dead_neuron_meter_reads_nothing_on_the_host_inside_the_step_loop(monkeypatch):
    """The meter's counters stay on the device: with it attached, the training loop still reads tensor values on
    the host only at its divergence checks and epoch ends (as tests/test_fast_path.py checks without it)."""
    import harness.train as train_module

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10), nn.ReLU())
    g = torch.Generator().manual_seed(0)
    n = 16 * (train_module.CHECK_EVERY + 3)
    data = DeviceData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g), torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                      torch.zeros(2, dtype=torch.long), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 0, "zeros", False)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    reads: list[str] = []

    def watch(name):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, **k):
            reads.append(name)
            return real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    class Marks(StepHooks):
        def after_optimizer_step(self, step):
            reads.append(f"step {step}")

    with metrics.DeadNeuronMeter(net) as meter:
        for name in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist"):
            watch(name)
        steps = train_module.CHECK_EVERY + 3
        train(net, data, steps=steps, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=0,
              hooks=Marks())
        monkeypatch.undo()
        overall, sites = meter.read()
    syncing = [i for i, r in enumerate(reads) if not r.startswith("step ")]
    steps_before = {sum(r.startswith("step ") for r in reads[:i]) for i in syncing}
    assert steps_before <= {train_module.CHECK_EVERY, steps}, steps_before
    assert 0 < overall < 1 and set(sites) == {"1", "5"}


def test_dead_neuron_meter_under_torch_compile_one_graph_same_rates():
    """The meter's hooks inside a compiled step (the fast path's torch.compile, on the CPU here): traced into one
    graph (no recompilation per step: the counters are device tensors, nothing changing is guarded on) and the same
    rates as eager."""
    import copy

    from torch._dynamo.utils import counters

    from harness.train import FastPath

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10), nn.ReLU())
    g = torch.Generator().manual_seed(0)
    data = DeviceData(torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (64,), generator=g), torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                      torch.zeros(2, dtype=torch.long), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 0, "zeros", False)
    torch._dynamo.reset()
    counters.clear()
    rates = []
    for compiled, m in ((False, net), (True, copy.deepcopy(net))):
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        with metrics.DeadNeuronMeter(m) as meter:
            train(m, data, steps=12, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=0,
                  fast=FastPath(compile=compiled))
            rates.append(meter.read())
    assert rates[0] == rates[1] and 0 < rates[0][0] < 1
    assert counters["stats"]["unique_graphs"] == 1


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


@pytest.fixture(autouse=True)
def _threads():
    """One CPU thread (overrides conftest's two): the tiny convolutions of these runs are ~10x faster without the
    threads' synchronisation on a shared 2-core machine, and every comparison here is within one thread setting."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def ap_specs():
    m = load(AP_YAML, profile="ci")
    return {s.method: tiny(s) for s in expand(m) if s.seed == 0}


@pytest.fixture(scope="module")
def full_run(ap_specs, data_root, tmp_path_factory):
    torch.set_num_threads(1)
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
    assert stats["base_pruned"] == round(0.18 * alive)  # keeps round(alive * (1 - base_rate))
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


@pytest.mark.parametrize("alive, removed", [(25, 4), (75, 14), (100, 18)])
def test_base_step_count_at_half_way_alive_counts(alive, removed):
    """The nested base step removes round(base_rate * alive) (torch.nn.utils.prune's count: Python's round of the float
    product, half to even), which differs from alive - round(alive * (1 - base_rate)) by one at 1.5 % of alive counts
    (4,487 of 1..299,999 for 0.18): 25 -> 4 (not 5), 75 -> 14 (not 13); 100 -> 18 either way."""
    w = nn.Parameter(torch.arange(1.0, alive + 1.0))
    masks = MaskSet({"w": w})
    stats = masks.prune_("magnitude", "global", 0.18)
    assert stats["pruned"] == removed == round(0.18 * alive)
    assert masks.masks["w"][:removed].logical_not().all() and masks.masks["w"][removed:].all()  # the smallest |w|
    assert (removed == alive - round(alive * (1 - 0.18))) == (alive == 100)


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
        # the paper's dynamic DNR, over each epoch's training batches, beside the post-training test-set value
        assert all(0 < e["train_dnr"] < 1 and len(e["train_dnr_layers"]) == 19 for e in r["epochs"])
        assert r["train_dnr"] == r["epochs"][-1]["train_dnr"] != r["dead_neuron_rate"]
    assert rows[-1]["dead_neuron_rate"] == rows[-2]["dead_neuron_rate"] and "epochs" not in rows[-1]
    d = Paths(root).run_dir("ap", spec.id)
    csv_lines = (d / "ap_epochs.csv").read_text().splitlines()
    assert csv_lines[0].startswith("cycle,epoch,steps,test_acc") and "dnr/relu" in csv_lines[0]
    assert ",dead_neuron_rate,train_dnr," in csv_lines[0] and "train_dnr/relu" in csv_lines[0]
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
    assert plain.training.lr_schedule.name == "warmup_fixed" and plain.model.init is None  # the paper's He init


def test_full_manifest_encodes_the_sheet():
    specs = expand(load(AP_YAML))
    assert len(specs) == 8 * 10 and {s.seed for s in specs} == set(range(10))
    s = next(x for x in specs if x.method == "global_mag_ap")
    t = s.training
    assert s.params.cycles == 24 and s.prunable == "all_weights" and s.model.arch == "resnet20_cifar_optb"
    assert s.dataset.std == (0.2023, 0.1994, 0.2010) and s.dataset.pad_mode == "zeros" and s.dataset.hflip
    assert (t.batch_size, t.drop_last, t.pretrain, t.retrain) == (64, False, "50ep", "50ep")
    assert (t.optimizer.name, t.optimizer.momentum, t.optimizer.weight_decay) == ("sgd", 0.9, 1e-4)  # the paper's
    assert s.model.init is None  # He initialisation: the builder's (ap.md 1.1)
    assert t.lr_schedule == FULL
    # the released script's recipe as its own profile: Xavier-style re-init, weight decay 5e-4, all else the same
    script = next(x for x in expand(load(AP_YAML, "released_script")) if x.method == "global_mag_ap" and x.seed == s.seed)
    assert script.model.init == "ap_xavier" and script.training.optimizer.weight_decay == 5e-4
    assert dataclasses.replace(script.training, optimizer=t.optimizer) == t and script.params == s.params
    assert {x.method: x.params.mode for x in specs} == {"global_mag": "reinit", "global_mag_ap": "reinit", "lth": "lt",
                                                        "lth_ap": "lt", "lamp_cyc": "reinit", "lamp_cyc_ap": "reinit",
                                                        "dpf_cyc": "reinit", "dpf_cyc_ap": "reinit"}
    dpf = next(x for x in specs if x.method == "dpf_cyc_ap").params
    assert (dpf.decision, dpf.dpf_update_every, dpf.dpf_end, dpf.base_rate, dpf.ap_rate) == ("dpf", 16, "32ep", 0.18, 0.02)
    assert {x.params.decision for x in specs if not x.method.startswith("dpf")} == {"masked"}


def test_dpf_base_trains_with_feedback_then_ap_removes_from_its_mask(ap_specs, data_root, tmp_path, monkeypatch):
    """DPF as the base (decision "dpf"): the cycle's first training re-selects the mask over every entry of DPF's own
    prunable set, the conv weights (entries pruned in the previous cycle may come back), and ends with exactly
    U - round(0.18 U) of its U alive conv entries; BN gamma and the linear weight are never in a selection. Then AP
    removes n_ap (counted before the base step over the whole maskable set) negative entries; the recorded retraining
    ends with exactly that mask."""
    spec = ap_specs["dpf_cyc_ap"]
    assert (spec.params.decision, spec.params.dpf_update_every, spec.params.dpf_end) == ("dpf", 4, "3ep")
    spec = dataclasses.replace(spec, params=dataclasses.replace(spec.params, dpf_update_every=1, dpf_end="1ep"))
    hooks, selections = [], []
    real_train, real_select = ap.train, MaskSet.select_

    def spy_train(*a, **k):
        h = k["hooks"]
        hooks.append([type(x).__name__ for x in h.hooks] if isinstance(h, HookChain) else type(h).__name__)
        return real_train(*a, **k)

    def select(self, *a, **k):
        out = real_select(self, *a, **k)
        selections.append((k.get("eligible"), k.get("density"), out["regrown"], tuple(self.params)))
        return out

    monkeypatch.setattr(ap, "train", spy_train)
    monkeypatch.setattr(MaskSet, "select_", select)
    rows = run_spec(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    # per cycle: the DPF decision training (DPF's hook on the conv weights + the others' masks re-applied), then the
    # masked recorded retraining (MaskHook + epoch evaluation)
    assert hooks == [["CubicMaskHook", "MaskHook"], ["MaskHook", "EpochEval"]] * 2
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width)
    conv = list(MaskSet.for_model(model, "conv_weights").params)
    maskable = MaskSet.for_model(model, spec.prunable)
    n = sum(int(m.numel()) for m in maskable.masks.values())
    n_conv = sum(int(maskable.masks[c].numel()) for c in conv)
    assert all(e == "all" and names == tuple(conv) for e, _, _, names in selections)  # never BN gamma or fc
    for k in (1, 2):
        r = rows[k]
        alive, u = r["alive_before"], r["dpf_alive_before"]
        assert r["base_pruned"] == round(0.18 * u) and r["n_ap"] == int(0.02 * alive) == r["ap_removed"]
        assert round(r["density"] * n) == alive - r["base_pruned"] - r["n_ap"]
        assert r["masked_nonzero"] == 0 and r["dpf_mask_updates"] == 2 + 1  # steps 0 and 1 of 2-step epoch 1, + final
        gammas = [f"{name}.weight" for name, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]
        assert len(gammas) == 21 and all(r["layer_density"][g] == 1.0 for g in gammas)  # BN gamma: never selected
    assert rows[1]["dpf_alive_before"] == n_conv
    assert rows[2]["dpf_regrown"] > 0  # the feedback brought back entries cycle 1 had pruned
    cycle2 = [d for _, d, _, _ in selections[3:]]
    assert round(cycle2[-1] * n_conv) == rows[2]["dpf_alive_before"] - round(0.18 * rows[2]["dpf_alive_before"])


def test_dpf_base_never_selects_bn_gamma_and_keeps_the_others_masks(ap_specs, data_root):
    """Boundary: BN gamma made the smallest weights of the maskable set (|gamma| = 1e-6, below every conv weight)
    and a masked linear entry: a re-selection over every maskable entry would prune those gammas and could bring the
    linear entry back; DPF's re-selection over its own set (conv weights) leaves both as they were, keeps exactly
    U - round(0.18 U) conv entries, and the masked linear entry stays 0 after every step."""
    spec = ap_specs["dpf_cyc_ap"]
    model, masks, _ = trained_model(spec, data_root, steps=1)
    conv = [c for c in ap.prunable_parameters(model, "conv_weights")]
    with torch.no_grad():
        model.bn1.weight[:2] = 1e-6
        model.layer1[0].bn1.weight[0] = -1e-6
    fc = dict(masks.masks)
    fc["fc.weight"] = fc["fc.weight"].clone()
    fc["fc.weight"][0, :3] = False
    masks.set_masks_(fc)
    masks.apply_()
    conv_alive = sum(int(masks.masks[c].sum()) for c in conv)
    before = {n: m.clone() for n, m in masks.masks.items()}
    # the old behaviour (one re-selection over every maskable entry) would prune the tiny gammas
    everything = MaskSet({n: nn.Parameter(p.detach().clone()) for n, p in masks.params.items()})
    everything.select_(ap.scores.compute("magnitude", everything.score_inputs(), dense=True), "global",
                       density=0.9, eligible="all")
    assert not bool(everything.masks["bn1.weight"][:2].any()) and not bool(everything.masks["layer1.0.bn1.weight"][0])
    ctx = Context(paths=Paths(Path("/nonexistent")), data_root=data_root, device="cpu")
    data = get_data(spec.dataset, ctx)
    zero_after_step = []

    class Watch(StepHooks):
        def after_optimizer_step(self, step):
            zero_after_step.append(float(model.fc.weight.detach()[0, :3].abs().sum()))

    def train_fn(hook):
        opt = make_optimizer(spec.training.optimizer, model.parameters())
        train(model, data, steps=4, optimizer=opt, scheduler=None, batch_size=16, drop_last=False,
              seed=stage_seed(0, "dpf"), hooks=HookChain(hook, Watch()))

    stats = ap.dpf_decision_training(masks, conv, "magnitude", "global", 0.18, 1, 3, train_fn)
    assert stats["dpf_alive_before"] == conv_alive
    assert stats["base_pruned"] == round(0.18 * conv_alive)
    assert sum(int(masks.masks[c].sum()) for c in conv) == conv_alive - round(0.18 * conv_alive)
    for n in masks.masks:
        if n not in conv:
            assert torch.equal(masks.masks[n], before[n]), n  # BN gamma (tiny ones included), fc: untouched
    assert bool(masks.masks["bn1.weight"][:2].all()) and bool(masks.masks["layer1.0.bn1.weight"][0])
    assert zero_after_step == [0.0] * 4  # the masked linear entries re-zeroed after every step
    assert masked_nonzero_of(masks) == 0
    # a maskable set that is DPF's own set (nothing outside the selection)
    only = MaskSet({c: masks.params[c] for c in conv}, {c: masks.masks[c] for c in conv})
    alive = sum(int(m.sum()) for m in only.masks.values())
    out = ap.dpf_decision_training(only, conv, "magnitude", "global", 0.18, 1, 3, train_fn)
    assert out["base_pruned"] == round(0.18 * alive) and masked_nonzero_of(only) == 0


def masked_nonzero_of(masks):
    return ap.masked_nonzero(masks)
