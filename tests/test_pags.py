"""The PAGS sampler (pags.md 4) on a small real model: the trained mask is the argmax of the
candidates' graph distances, candidates differ, the density is exact, BN and biases are never
masked, and the PAGS ci grid runs through the experiment runner with graph metrics logged."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from harness import experiment
from harness.config import expand, load
from harness.data import DeviceData
from harness.experiment import Context
from harness.models import build_model
from harness.paths import Paths, read_jsonl
from harness.pruning import graph
from harness.pruning.masks import MaskSet
from harness.pruning.methods.at_init import AtInit, AtInitParams

from .conftest import ROOT

PAGS = ROOT / "paper_configs" / "pags.yaml"


def _data(n=96) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, x[:16], y[:16], (0.5,) * 3, (0.25,) * 3, 4, "reflect", True)


class _Spec:
    training = type("T", (), {"batch_size": 16, "drop_last": True})
    allocation, target_sparsity = "global", 0.9

    def __init__(self, score, params):
        self.score, self.params = score, params


@pytest.mark.parametrize("score, draw", [("snip", "topk"), ("random", "topk"), ("random", "bernoulli")])
def test_the_trained_mask_is_the_argmax_of_the_candidate_distances(score, draw):
    torch.manual_seed(0)
    model = build_model("resnet34_tv_imagenet_stem", 10, 0.25, "iclr23")
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = MaskSet.for_model(model, "conv_and_linear_weights")
    params = AtInitParams(mode="eval", candidates=5, draw=draw, graph=graph.GraphParams(min_edges=100))
    info = AtInit().choose_mask(_Spec(score, params), model, masks, _data(), torch.Generator().manual_seed(1))
    d = info["pags_distances"]
    assert len(d) == 5 and len(set(d)) == 5  # five different candidates
    assert info["pags_chosen"] == max(range(5), key=d.__getitem__)
    weights = {n: theta0[n] for n in masks.params}
    assert graph.distance(weights, masks.masks, params=params.graph) == pytest.approx(max(d), rel=1e-9)
    for n, p in model.named_parameters():  # theta_0 * m: unmasked entries untouched, BN and biases too
        if n in masks.masks:
            assert torch.equal(p.detach(), theta0[n] * masks.masks[n])
        else:
            assert torch.equal(p.detach(), theta0[n])
    total = sum(m.numel() for _, m in masks)
    kept = sum(int(m.sum()) for _, m in masks)
    if draw == "topk":
        assert kept == round(0.1 * total)
    else:
        assert kept / total == pytest.approx(0.1, abs=0.005)
    prunable = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(masks.masks) == prunable  # no BN, no bias


def test_pags_ci_grid_runs_with_graph_metrics(tmp_path, data_root):
    m = load(PAGS, "ci")
    specs = expand(m)
    spec = next(s for s in specs if s.method == "snip_pags")
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="8it"))
    rows = experiment.run(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    final = rows[-1]
    assert final["pags_distance"] > 0  # the chosen candidate's distance, with theta_0 as edge weights
    assert final["graph_D"] > 0 and final["graph_D"] != final["pags_distance"]  # re-measured on the trained weights
    assert "test_acc_at_best_val" in final and "val_acc" in rows[0]
    d = Paths(tmp_path).run_dir("pags", spec.id)
    table = (d / "graph.csv").read_text().splitlines()
    assert table[0].startswith("name,shape,") and len(table) == 1 + 37
    assert read_jsonl(d / "rows.jsonl")[-1]["density"] == pytest.approx(0.1, abs=1e-4)
