"""Lockstep: the project's iterative procedure with LAMP's five layerwise rules (global, uniform, uniform_plus,
erk, lamp) against the transcription of LAMP's released code (tests/reference/lamp_code.py), which masks
through ``torch.nn.utils.prune`` exactly as the released code does.

The project runs for real: :func:`harness.stage.run_spec` on the lamp.yaml ci cell of each method, shrunk to
ResNet-20 (option B) at width 1/4 (17,132 prunable Conv2d + Linear weights; the last layer is the 160-weight
Linear), 16x16 random images, batch 8 (drop_last, as the manifest), 30 dense pre-training steps and 10 rounds
of 20 % -> 3 retraining steps, AdamW (lr 3e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.01, all written
out in the manifest), a fresh optimiser every round. The five methods share one dense model (as the released
code shares ``unpruned.pth``). Every train() call of the procedure is recorded; the transcription starts
from the same initialisation and is fed the same batches (the seeds the project drew them from).

Compared exactly (``torch.equal``): after every dense step and every retraining step, every parameter and
buffer (the transcription's ``weight_orig * weight_mask`` for the masked weights); after every pruning
round, every mask. 10 rounds reach 10.7 % remaining; Uniform+'s last-layer floor (20 % of the original 160)
takes over at round 8, so it is exercised.

A planted difference for each rule must make the comparison fail.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field

import pytest
import torch

from harness.config import ModelConfig
from harness.config.load import load
from harness.grid.expand import expand
from harness.data.device import DeviceData

from . import lamp_code as ref_lamp
from .common import MEAN, STD, batch_stream, record_trainings, tiny_resnet20

N_TRAIN, BATCH, PRETRAIN, RETRAIN, ROUNDS, AMOUNT = 64, 8, 30, 3, 10, 0.2
METHODS = ["global", "uniform", "uniform_plus", "erk", "lamp"]
TOTAL = 17132


@contextlib.contextmanager
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _data() -> DeviceData:
    """Random 16x16 images (the ResNet's pooling is adaptive), CIFAR normalisation, crop and flip."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (N_TRAIN + 16, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (N_TRAIN + 16,), generator=g)
    return DeviceData(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], MEAN, STD, 4, "zeros", True)


# ------------------------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """method -> (spec, rows, stages); the dense stage is recorded once (the first method trains it, the
    others load the cached model, as every method of a seed does)."""
    from harness.stage import run_spec
    from harness.stage import Context
    from harness.paths import Paths

    from ..conftest import ROOT

    cells = {s.method: s for s in expand(load(ROOT / "paper_configs" / "lamp.yaml", "ci")) if s.seed == 0}
    data = _data()
    paths = Paths(tmp_path_factory.mktemp("lamp"))
    out = {}
    with pytest.MonkeyPatch.context() as mp, one_thread():
        for method in METHODS:
            spec = cells[method]
            t = spec.training
            spec = dataclasses.replace(
                spec, model=ModelConfig("resnet20_cifar_optb", 0.25),
                training=dataclasses.replace(t, batch_size=BATCH, pretrain=f"{PRETRAIN}it", retrain=f"{RETRAIN}it"),
                params=dataclasses.replace(spec.params, rounds=ROUNDS),
                eval=dataclasses.replace(spec.eval, batch_size=16, train_examples=16, test_examples=16))
            stages = record_trainings(mp, data)
            rows = run_spec(spec, Context(paths=paths, device="cpu"))
            out[method] = (spec, rows, stages)
    return out, data


# ------------------------------------------------------------------------------------------- the comparison


@dataclass
class Tally:
    dense_steps_equal: int = 0
    rounds_masks_equal: int = 0
    steps_equal: int = 0
    steps: int = 0
    first_mismatch: str | None = None
    kept: list[int] = field(default_factory=list)  # survivors after each round (reference)
    floor_rounds: list[int] = field(default_factory=list)  # rounds at which Uniform+'s floor held the last layer

    def miss(self, where: str) -> None:
        if self.first_mismatch is None:
            self.first_mismatch = where


def _equal(recorded: dict, ref: dict) -> bool:
    return recorded.keys() == ref.keys() and all(torch.equal(recorded[n], v) for n, v in ref.items())


@pytest.fixture(scope="module")
def dense_reference(runs):
    """The transcription's pre-training (masks installed first, as the released code), compared step by step."""
    (out, data) = runs
    dense = out[METHODS[0]][2][0]
    assert dense.masks is None and dense.steps == PRETRAIN
    with one_thread():
        model = tiny_resnet20(seed=0)
        model.load_state_dict(dense.init)
        ref = ref_lamp.Lamp(model)
        ref.fresh_optimizer()
        stream = batch_stream(data, dense.seed, BATCH, True)
        equal = 0
        for i in range(dense.steps):
            ref.step(*next(stream))
            equal += _equal(dense.states[i], ref.effective())
        ref.refresh(data.normalise(data.test_x[:16]))
    return ref, equal


@one_thread()
def lockstep(runs, dense_reference, method: str, rule=None, **rule_kw) -> Tally:
    (out, data), (dense_ref, dense_equal) = runs, dense_reference
    spec, rows, stages = out[method]
    rounds = stages[1:] if stages[0].masks is None else stages
    assert len(rounds) == ROUNDS
    ref = ref_lamp.Lamp(copy.deepcopy(dense_ref.model), rule or method, installed=True, **rule_kw)
    tally = Tally(dense_steps_equal=dense_equal)
    for k, stage in enumerate(rounds, start=1):
        u_last = int(ref.masks()[-1].sum())
        ref.prune_round(AMOUNT)
        kept = [int(m.sum()) for m in ref.masks()]
        tally.kept.append(sum(kept))
        if method == "uniform_plus" and kept[-1] == 32 and u_last != 32:
            tally.floor_rounds.append(k)
        if all(torch.equal(a, b) for a, b in zip(stage.masks, ref.masks())):
            tally.rounds_masks_equal += 1
        else:
            tally.miss(f"round {k} mask")
        ref.fresh_optimizer()
        stream = batch_stream(data, stage.seed, BATCH, True)
        for i in range(stage.steps):
            ref.step(*next(stream))
            tally.steps += 1
            if _equal(stage.states[i], ref.effective()):
                tally.steps_equal += 1
            else:
                tally.miss(f"round {k} step {i}")
        ref.refresh(data.normalise(data.test_x[:16]))
    return tally


# ------------------------------------------------------------------------------------------- the tests


def test_the_recorded_runs_are_the_manifest_recipe(runs):
    out, _ = runs
    for method in METHODS:
        spec, rows, stages = out[method]
        assert (spec.score, spec.allocation) == {"global": ("magnitude", "global"), "uniform": ("magnitude", "uniform"),
                                                 "uniform_plus": ("magnitude", "uniform_plus"),
                                                 "erk": ("magnitude", "erk"), "lamp": ("lamp", "global")}[method]
        assert spec.prunable == "conv_and_linear_weights" and spec.training.drop_last
        rounds = stages[1:] if stages[0].masks is None else stages
        assert [s.steps for s in rounds] == [RETRAIN] * ROUNDS
        for s in stages:  # a fresh AdamW for every training, lr 3e-4 and AdamW's defaults written out
            assert s.opt == {"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                             "type": torch.optim.AdamW}
        assert len({id(s) for s in stages}) == len(stages)
        assert [r["index"] for r in rows if r["axis"] == "round"] == list(range(ROUNDS + 1))
    assert out[METHODS[0]][2][0].masks is None and all(out[m][2][0].masks is not None for m in METHODS[1:])


def test_dense_pretraining_equals_at_every_step(dense_reference):
    assert dense_reference[1] == PRETRAIN


@pytest.mark.parametrize("method", METHODS)
def test_rule_equals_released_code_every_round_and_step(runs, dense_reference, method):
    """10/10 rounds: masks equal; 30/30 retraining steps: every parameter and buffer equal (exact)."""
    t = lockstep(runs, dense_reference, method, **({"exact_k": True} if method == "lamp" else {}))
    assert t.first_mismatch is None, t
    assert (t.rounds_masks_equal, t.steps_equal, t.steps) == (ROUNDS, ROUNDS * RETRAIN, ROUNDS * RETRAIN)
    assert t.dense_steps_equal == PRETRAIN
    # the density follows 0.8^k up to rounding (uniform and erk round per layer)
    for k, kept in enumerate(t.kept, start=1):
        assert abs(kept - TOTAL * 0.8 ** k) <= 22, (k, kept)
    if method == "uniform_plus":
        assert t.floor_rounds and t.floor_rounds[0] == 8, t.floor_rounds


def test_lamp_exact_k_ties_deviation_measured(runs, dense_reference):
    """``exact_k_ties`` switched off (the released rule: every score >= the K-th): no tie at the threshold in
    10 rounds here, so the masks are the same."""
    t = lockstep(runs, dense_reference, "lamp", exact_k=False)
    assert t.first_mismatch is None and t.rounds_masks_equal == ROUNDS


# ------------------------------------------------------------------------------------------- planted differences


def _global_int(model, amount):  # int instead of round for the number pruned
    u = int(sum(int(m.weight_mask.sum()) for m in ref_lamp.prunable_modules(model)))
    torch.nn.utils.prune.global_unstructured([(m, "weight") for m in ref_lamp.prunable_modules(model)],
                                             pruning_method=torch.nn.utils.prune.L1Unstructured,
                                             amount=int(u * amount))


def _uniform_skip_first(model, amount):  # the first conv left dense (Uniform+'s exception in plain Uniform)
    for m in ref_lamp.prunable_modules(model)[1:]:
        torch.nn.utils.prune.l1_unstructured(m, name="weight", amount=amount)


def _uniform_plus_floor_current(model, amount):  # the brief's example: floor from the current last-layer size
    ref_lamp.unifplus(model, amount, floor_from="current")


def _erk_floor(model, amount):  # floor instead of round for each layer's survivors
    ref_lamp.per_layer(model, ref_lamp.erk_amounts(model, amount, rounding=torch.floor))


def _lamp_abs(model, amount):  # LAMP scores from |w| instead of w^2
    orig = ref_lamp.lamp_scores
    try:
        ref_lamp.lamp_scores = lambda w: orig(w.abs().sqrt())
        ref_lamp.lamp(model, amount, exact_k=True)
    finally:
        ref_lamp.lamp_scores = orig


@pytest.mark.parametrize("method, planted, fails_at", [
    ("global", _global_int, "round 5 mask"),  # U = 7,018: 0.2 U = 1,403.6, the first fraction >= .5
    ("uniform", _uniform_skip_first, "round 1 mask"),
    ("uniform_plus", _uniform_plus_floor_current, "round 8 mask"),  # where the floor first acts
    ("erk", _erk_floor, "round 1 mask"),
    ("lamp", _lamp_abs, "round 1 mask"),
])
def test_planted_rule_changes_fail(runs, dense_reference, method, planted, fails_at):
    t = lockstep(runs, dense_reference, method, rule=planted)
    assert t.first_mismatch == fails_at


# ------------------------------------------------------------------------------------------- boundaries (pruning only)


def _one_round(model, method: str, amount: float, rounds: int = 1, **rule_kw):
    """``rounds`` pruning rounds (no training) on the project's MaskSet (as Iterative.run calls it) and on the
    transcription; the masks after each round, both sides."""
    from harness.pruning.masks import MaskSet
    from harness.pruning.methods import METHODS as PROJECT

    ours = copy.deepcopy(model)
    masks = MaskSet.for_model(ours, "conv_and_linear_weights")
    ref = ref_lamp.Lamp(copy.deepcopy(model), method, **rule_kw)
    out = []
    for _ in range(rounds):
        masks.prune_(PROJECT[method].score, PROJECT[method].allocation, amount)
        ref.prune_round(amount)
        out.append(([m.clone() for _, m in masks], [m.clone() for m in ref.masks()]))
    return out


def _two_layers(*rows: list[float]) -> torch.nn.Module:
    model = torch.nn.Sequential(*[torch.nn.Linear(len(r), 1, bias=False) for r in rows])
    with torch.no_grad():
        for layer, r in zip(model, rows):
            layer.weight.copy_(torch.tensor([r]))
    return model


@pytest.mark.parametrize("method", METHODS)
def test_twenty_rounds_of_pruning_equal_on_the_ci_vgg(method):
    """Pruning only, the lamp.yaml ci model's architecture (VGG-16, 14 prunable tensors) at width 1/16 (58 k
    weights), all 20 rounds of 20 % (1.15 % remaining, Uniform+'s floor and ERK's dense layers active): masks
    equal after every round."""
    from harness.models.build import build_model

    torch.manual_seed(0)
    model = build_model("vgg16_bn_fc1_lamp", 10, 0.0625)
    with one_thread():
        rounds = _one_round(model, method, AMOUNT, rounds=20, **({"exact_k": True} if method == "lamp" else {}))
    equal = [all(torch.equal(a, b) for a, b in zip(p, r)) for p, r in rounds]
    assert all(equal), equal.index(False) + 1


def test_lamp_tie_at_the_threshold_is_the_exact_k_ties_deviation():
    """Two identical layers [1, 2, 3, 4]: LAMP scores tie across them. K = round(8 * 0.375) = 3 survivors;
    the K-th score (9/25) appears in both layers: the released code keeps both (4 survivors), the project
    exactly 3, the tie to the lower index (the first layer). With ``exact_k`` the transcription agrees."""
    model = _two_layers([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    (ours, released), = _one_round(model, "lamp", 0.625)
    assert [int(m.sum()) for m in released] == [2, 2]
    assert [int(m.sum()) for m in ours] == [2, 1]
    (_, exact), = _one_round(model, "lamp", 0.625, exact_k=True)
    assert all(torch.equal(a, b) for a, b in zip(ours, exact))


def test_global_rounding_boundary_at_amount_0_2_never_reaches_a_half():
    """Global: the project keeps round(U (1 - a)), torch.nn.utils.prune prunes round(U a). They agree unless
    U a is exactly x.5; at LAMP's a = 0.2, U a has a fractional part in {0, .2, .4, .6, .8}: never."""
    for u in range(1, 20001):
        assert u - round(u * 0.2) == round(u * (1 - 0.2)), u


def test_global_rounding_at_an_exact_half_equals_torch_prune():
    model = _two_layers([1.0, 2.0, 3.0], [4.0, 5.0])  # U = 5, a = 0.5: U a = 2.5
    (ours, released), = _one_round(model, "global", 0.5)
    assert [int(m.sum()) for m in released] == [1, 2]  # torch removes round(2.5) = 2, keeps 3
    assert all(torch.equal(a, b) for a, b in zip(ours, released))  # the project removes round(2.5) = 2 too


def test_uniform_plus_floor_boundary_equality_and_one_below():
    """Uniform+'s last layer: at round((1 - f) U_last) == floor (exactly at 20 % of the original size) the
    floor does not act (strict <), one below it does; both sides agree at both."""
    # 4-d first layer kept dense, a middle Linear of 40, a last Linear of 10 (floor round(0.2 * 10) = 2)
    def model_with(last: list[float]):
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(40, 1, bias=False), torch.nn.Linear(10, 1, bias=False))
        torch.manual_seed(1)
        with torch.no_grad():
            m[2].weight.copy_(torch.randn(1, 40))
            m[3].weight.copy_(torch.tensor([last]))
        return m

    last = [float(i + 1) for i in range(10)]
    # f = round(51 a) / 50; a = 0.8 -> T = 41, f = 0.82: round(0.18 * 10) = 2 == floor: no floor, f everywhere
    (ours, released), = _one_round(model_with(last), "uniform_plus", 0.8)
    assert int(released[-1].sum()) == 2 and all(torch.equal(a, b) for a, b in zip(ours, released))
    # a = 0.85 -> T = 43, f = 0.86: round(0.14 * 10) = 1 < 2: the last layer stops at 2, the middle absorbs it
    (ours, released), = _one_round(model_with(last), "uniform_plus", 0.85)
    assert int(released[-1].sum()) == 2 and int(released[0].sum()) == 1
    assert all(torch.equal(a, b) for a, b in zip(ours, released))


def test_erk_dense_boundary_ratio_exactly_one():
    """ERK moves a layer into the dense set only when its planned survivors exceed what it has (ratio > 1,
    strictly). Linear(4, 4) and Linear(3, 23): e = (8, 26), U = (16, 69), T = 0.8 * 85 = 68: the first layer's
    share is round(68 * 8 / 34) = 16 = U_1, a ratio of exactly 1 (not dense, keeps all 16), the second keeps
    52. Both sides agree there and in the two rounds after (ratios 0.8125 and below)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(3, 23, bias=False))
    torch.manual_seed(2)
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn_like(layer.weight))
    rounds = _one_round(model, "erk", 0.2, rounds=3)
    assert [int(m.sum()) for m in rounds[0][1]] == [16, 52]
    for ours, released in rounds:
        assert all(torch.equal(a, b) for a, b in zip(ours, released))
