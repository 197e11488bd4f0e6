"""harness/pruning/reallocation.py: DSR / Sparse Momentum / SET-ITOP re-allocation on a real small run (timing,
regrowth, hidden values), and Sparse Momentum's state across a resume."""

from __future__ import annotations

import dataclasses
import pytest
import torch
from harness import stage
from harness.config import OptimizerConfig
from harness.grid.expand import expand
from harness.stage import Context
from harness.paths import Paths
from harness.pruning.masks import MaskSet
from harness.pruning.methods.dynamic import TIMING, DynamicParams
from harness.pruning.reallocation import ReallocationHook, initial_masks
from harness.pruning.schedules import Periodic
from harness.train import make_optimizer, train

from tests.tiny import images, resnet20


@pytest.mark.parametrize("regrow", ["random", "momentum", "set"])
def test_dynamic_sparse_training_reallocates_on_time_and_regrows(regrow, one_thread):
    """DSR / Sparse Momentum / SET-ITOP on a real small run: re-allocations on the reference's
    timing, regrowth counted as entries masked before an update and active after it, the final model
    sparse; SM regrows where |momentum| was largest; DSR trains hidden values of masked entries but the
    forward pass and evaluation see m * w. (The lockstep equality with each reference is in
    tests/reference/test_dynamic_reference.py.)"""
    model = resnet20(4)
    masks = MaskSet.for_model(model, "conv_weights")
    gen = torch.Generator().manual_seed(0)
    p = DynamicParams(regrow=regrow, update_every="4it", initial="uniform", prune_fraction=0.05, threshold=0.05)
    masks.set_masks_(initial_masks(masks, p, 0.2, gen))
    regrown_seen = []

    class Spy(ReallocationHook):
        def after_optimizer_step(self, step):
            old = {n: m.clone() for n, m in self.masks}
            mom = {n: self._momentum(n).clone() for n in self.masks.params}
            super().after_optimizer_step(step)
            grown = {n: self.masks.masks[n] & ~old[n] for n in old}
            regrown_seen.append(sum(int(g.sum()) for g in grown.values()))
            if regrow == "momentum":  # regrown where |momentum| is largest among the masked entries
                for n in old:
                    free = ~old[n] & ~grown[n]
                    if grown[n].any() and free.any():
                        assert mom[n][grown[n]].abs().min() >= mom[n][free].abs().max()

    hook = Spy(masks, p, schedule=Periodic(every=4, total=16, target_density=0.2, timing=TIMING[regrow]), generator=gen)
    opt = make_optimizer(OptimizerConfig("sgd", lr=0.1, weight_decay=0.0, momentum=0.9), model.parameters())
    hook.attach(model, opt)
    hook.start()
    train(model, images(), steps=16, optimizer=opt, scheduler=None, batch_size=16, drop_last=True, seed=5, hooks=hook)
    # DSR: after 0-based iterations 4, 8, 12; SM: after the 4th, 8th, 12th (the 16th ends the run);
    # SET-ITOP: after every 4th iteration, the last included
    assert hook.updates == {"random": 3, "momentum": 3, "set": 4}[regrow]
    assert hook.reactivation.total == sum(regrown_seen) > 0
    kept = sum(int(m.sum()) for _, m in masks)
    assert abs(kept / sum(m.numel() for _, m in masks) - 0.2) < 0.03
    hidden = any(bool((w[~masks.masks[n]] != 0).any()) for n, w in masks.params.items())
    assert hidden == (regrow == "random")  # DSR keeps training the hidden values of masked entries
    with hook.effective_weights():
        assert all(bool((w[~masks.masks[n]] == 0).all()) for n, w in masks.params.items())
    hook.finish()
    assert all(bool((w[~masks.masks[n]] == 0).all()) for n, w in masks.params.items())


@pytest.mark.parametrize("method", ["sparse_momentum"])
def test_dynamic_run_resumes_bit_identical(tmp_path, data_root, dpf_ci, method, one_thread):
    """Interrupted after epoch 1 of 3 and resumed: the same rows and masks as an uninterrupted run. The
    re-allocation after the resume needs the checkpointed state: SM's growth adjustment history and prune-rate
    schedule (DSR's hidden values, threshold and generator: the contract test, tests/test_procedures.py)."""
    spec = next(s for s in expand(dpf_ci) if s.method == method and s.seed == 0)
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, pretrain="3ep"),
                               eval=dataclasses.replace(spec.eval, train_examples=64, test_examples=100))
    full = stage.run_spec(spec, Context(paths=Paths(tmp_path / "a"), data_root=data_root, device="cpu"))
    with pytest.raises(stage.Interrupted):
        stage.run_spec(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu",
                                     stop_after=("epoch", 1)))
    resumed = stage.run_spec(spec, Context(paths=Paths(tmp_path / "b"), data_root=data_root, device="cpu"))
    assert resumed == full and full[-1]["mask_updates"] == 2
    a = torch.load(Paths(tmp_path / "a").run_dir("dpf", spec.id) / "masks_final.pt")
    b = torch.load(Paths(tmp_path / "b").run_dir("dpf", spec.id) / "masks_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
