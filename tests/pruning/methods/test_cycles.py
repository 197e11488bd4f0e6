"""harness/pruning/methods/cycles.py: the cycles procedure on tiny ci cells: each cycle's theta_0 (rewind or
re-draw), rows and densities, the plain base method as the same procedure without AP, and DPF as the base step
(re-selection over DPF's own prunable set only, exact counts)."""

from __future__ import annotations

import dataclasses
import pytest
import torch
from torch import nn
from harness import stage as stage_module
from harness.stage import Context, Stage, run_spec
from harness.models.build import build_model
from harness.paths import Paths
from harness.pruning import ap, scores
from harness.pruning.masks import MaskSet
from harness.pruning.methods.cycles import Cycles
from harness.train import HookChain, StepHooks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def full_run(ap_specs, data_root, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ap_full")
    spec = ap_specs["global_mag_ap"]
    rows = run_spec(spec, Context(paths=Paths(root), data_root=data_root, device="cpu"))
    return spec, root, rows


def test_lt_rewinds_to_a_copy_of_the_original_init(full_run, data_root):
    """The cycle's theta_0: ``lt`` reloads the dense pre-training's init (a fresh copy each time: ap_bias_reset_copy);
    ``reinit`` draws the initialiser from a per-cycle seeded stream (the same cycle: the same weights)."""
    spec, root, _ = full_run
    stage = Stage(spec, Context(paths=Paths(root), data_root=data_root, device="cpu"))
    stage.begin_dense()
    original = stage.original()
    got = stage.original()
    got["conv1.weight"].add_(1)
    assert torch.equal(stage.original()["conv1.weight"], original["conv1.weight"])  # copied, not aliased
    assert set(original) == set(stage.model.state_dict())  # every parameter and buffer (BN running stats too)
    re, again, other = (stage.fresh_state(f"cycles/init{k}") for k in (1, 1, 2))
    assert all(torch.equal(re[k], again[k]) for k in re)  # per-cycle seeded stream
    assert not torch.equal(re["conv1.weight"], other["conv1.weight"])
    assert not torch.equal(re["conv1.weight"], original["conv1.weight"])


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
    csv_lines = (d / "epochs.csv").read_text().splitlines()
    assert csv_lines[0].startswith("cycle,epoch,steps,test_acc") and "dnr/relu" in csv_lines[0]
    assert ",dead_neuron_rate,train_dnr," in csv_lines[0] and "train_dnr/relu" in csv_lines[0]
    assert [line.split(",")[:2] for line in csv_lines[1:]] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"]]
    final, masks = torch.load(d / "final.pt"), torch.load(d / "masks_final.pt")
    for n, m in masks.items():
        assert float(final[n][~m].abs().sum()) == 0


def test_plain_base_method_is_the_same_procedure_without_ap(ap_specs):
    plain, with_ap = ap_specs["global_mag"], ap_specs["global_mag_ap"]
    assert plain.procedure == with_ap.procedure == "cycles" and plain.score == with_ap.score == "magnitude"
    assert (plain.params.base_rate, plain.params.ap_rate) == (0.2, 0.0)
    assert (with_ap.params.base_rate, with_ap.params.ap_rate) == (0.18, 0.02)
    lamp = ap_specs["lamp_cyc_ap"]
    assert lamp.procedure == "cycles" and lamp.score == "lamp" and lamp.params.ap_rate == 0.02
    assert ap_specs["lth"].params.mode == "lt" and plain.params.mode == "reinit"
    assert plain.training.lr_schedule.name == "warmup_fixed" and plain.model.init is None  # the paper's He init


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
    real_train, real_select = stage_module.train, MaskSet.select_

    def name(h):
        return f"SplitHook({type(h.part).__name__}, {type(h.rest).__name__})" if hasattr(h, "part") else type(h).__name__

    def spy_train(*a, **k):
        h = k["hooks"]
        hooks.append([name(x) for x in h.hooks] if isinstance(h, HookChain) else name(h))
        return real_train(*a, **k)

    def select(self, *a, **k):
        out = real_select(self, *a, **k)
        selections.append((k.get("eligible"), k.get("density"), out["regrown"], tuple(self.params)))
        return out

    monkeypatch.setattr(stage_module, "train", spy_train)
    monkeypatch.setattr(MaskSet, "select_", select)
    rows = run_spec(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    # the dense cycle 0; per cycle: the DPF decision training (DPF's hook on the conv weights + the others' masks
    # re-applied), then the masked recorded retraining (MaskedHook + epoch evaluation)
    assert hooks == ["_SnapshotHook"] + [["SplitHook(ReselectHook, MaskedHook)"], ["MaskedHook", "_EpochEval"]] * 2
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


def _dpf_base_step(spec, data_root, tmp_path, monkeypatch, prepare):
    """Cycles' DPF base step (its decision training and last selection) on a Stage holding ``spec``'s fresh model,
    after ``prepare(stage)``; a watch hook rides along every training step. (stats, masks before, watched values)."""
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, retrain="4it"),
                               params=dataclasses.replace(spec.params, dpf_update_every=1, dpf_end="3it"))
    stage = Stage(spec, Context(paths=Paths(tmp_path), data_root=data_root, device="cpu"))
    stage.begin_fresh()
    prepare(stage)
    before = {n: m.clone() for n, m in stage.masks.masks.items()}
    watched = []

    class Watch(StepHooks):
        def after_optimizer_step(self, step):
            watched.append(float(sum((p.detach()[~stage.masks.masks[n]]).abs().sum()
                                     for n, p in stage.masks.params.items() if n not in stage.conv_names())))

    real = stage_module.train
    monkeypatch.setattr(stage_module, "train", lambda *a, hooks, **k: real(*a, hooks=HookChain(hooks, Watch()), **k))
    stats = Cycles._dpf_decision(spec, stage, 1, stage.steps("4it"), spec.params.base_rate)
    return stage, stats, before, watched


def test_dpf_base_never_selects_bn_gamma_and_keeps_the_others_masks(ap_specs, data_root, tmp_path, monkeypatch):
    """Boundary: BN gamma made the smallest weights of the maskable set (|gamma| = 1e-6, below every conv weight)
    and a masked linear entry: a re-selection over every maskable entry would prune those gammas and could bring the
    linear entry back; DPF's re-selection over its own set (conv weights) leaves both as they were, keeps exactly
    U - round(0.18 U) conv entries, and the masked linear entry stays 0 after every step."""
    spec = ap_specs["dpf_cyc_ap"]

    def prepare(stage):
        model, masks = stage.model, stage.masks
        with torch.no_grad():
            model.bn1.weight[:2] = 1e-6
            model.layer1[0].bn1.weight[0] = -1e-6
        fc = dict(masks.masks)
        fc["fc.weight"] = fc["fc.weight"].clone()
        fc["fc.weight"][0, :3] = False
        masks.set_masks_(fc)
        masks.apply_()
        # the old behaviour (one re-selection over every maskable entry) would prune the tiny gammas
        everything = MaskSet({n: nn.Parameter(p.detach().clone()) for n, p in masks.params.items()})
        everything.select_(scores.compute("magnitude", everything.score_inputs(), dense=True), "global",
                           density=0.9, eligible="all")
        assert not bool(everything.masks["bn1.weight"][:2].any()) and not bool(everything.masks["layer1.0.bn1.weight"][0])

    stage, stats, before, watched = _dpf_base_step(spec, data_root, tmp_path, monkeypatch, prepare)
    masks, conv = stage.masks, stage.conv_names()
    conv_alive = sum(int(before[c].sum()) for c in conv)
    assert stats["dpf_alive_before"] == conv_alive and stats["alive_all"] == sum(int(m.sum()) for m in before.values())
    assert stats["base_pruned"] == round(0.18 * conv_alive)
    assert stage.alive(only="conv") == conv_alive - round(0.18 * conv_alive)
    assert stats["dpf_mask_updates"] == 3 + 1  # steps 0, 1, 2 before dpf_end = 3, then the last selection
    for n in masks.masks:
        if n not in conv:
            assert torch.equal(masks.masks[n], before[n]), n  # BN gamma (tiny ones included), fc: untouched
    assert bool(masks.masks["bn1.weight"][:2].all()) and bool(masks.masks["layer1.0.bn1.weight"][0])
    assert watched == [0.0] * 4  # the masked entries outside DPF's set (the linear ones) re-zeroed after every step
    assert masked_nonzero_of(masks) == 0


def test_dpf_base_on_a_maskable_set_that_is_dpfs_own(ap_specs, data_root, tmp_path, monkeypatch):
    """Boundary: nothing outside the selection (the maskable set is the conv weights): the same exact count."""
    spec = dataclasses.replace(ap_specs["dpf_cyc_ap"], prunable="conv_weights")
    stage, stats, before, watched = _dpf_base_step(spec, data_root, tmp_path, monkeypatch, lambda s: None)
    alive = sum(int(m.sum()) for m in before.values())
    assert stage.conv_names() == list(stage.masks.params)
    assert stats["base_pruned"] == round(0.18 * alive) == alive - stage.alive()
    assert masked_nonzero_of(stage.masks) == 0 and watched == [0.0] * 4


def masked_nonzero_of(masks):
    return ap.masked_nonzero(masks)
