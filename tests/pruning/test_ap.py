"""harness/pruning/ap.py: AP's cycle step (the base method's nested step, then n_ap negative entries with the
smallest movement), its counts at half-way alive counts, and the guard when candidates run out."""

from __future__ import annotations

from pathlib import Path
import pytest
import torch
from torch import nn
from harness.stage import Context, load_data
from harness.models.build import build_model
from harness.paths import Paths
from harness.pruning import ap
from harness.pruning.masks import MaskSet
from harness.pruning.updates import MaskedHook
from harness.train import make_optimizer, stage_seed, train

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_model(spec, data_root, steps=4):
    """A tiny model trained a few masked steps from its init on the real ci data; (model, masks, init)."""
    ctx = Context(paths=Paths(Path("/nonexistent")), data_root=data_root, device="cpu")
    data = load_data(spec.dataset, ctx)
    torch.manual_seed(0)
    model = build_model(spec.model.arch, spec.num_classes, spec.model.width, spec.model.init)
    masks = MaskSet.for_model(model, spec.prunable)
    init = {n: p.detach().clone() for n, p in masks.params.items()}
    opt = make_optimizer(spec.training.optimizer, model.parameters())
    train(model, data, steps=steps, optimizer=opt, scheduler=None, batch_size=16, drop_last=False,
          seed=stage_seed(0, "t"), hooks=MaskedHook(masks))
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
