"""harness/metrics.py: the dead-neuron rate on a hand-made network, the per-epoch meter over training batches (no
host sync inside the step loop, one graph under torch.compile), and ReLU sites as modules."""

from __future__ import annotations

import math
import torch
from torch import nn
from harness import metrics
from harness.data.device import DeviceData
from harness.models.build import build_model
from harness.train import StepHooks, train


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


class _Attend(nn.Module):
    def __init__(self, e: int = 8, heads: int = 2):
        super().__init__()
        self.mha = nn.MultiheadAttention(e, heads, batch_first=True)
        self.head = nn.Linear(e, 3)

    def forward(self, x):
        return self.head(self.mha(x, x, x, need_weights=False)[0])


def test_attention_macs_count_both_projections_and_the_products():
    t, e = 5, 8
    got = metrics.layer_macs(_Attend(e), (t, e))
    # q/k/v projection 3 T e^2, output projection T e^2 (its Linear is never called as a module), q k^T and the
    # weighted sum 2 T^2 e, the head T e 3
    assert got == {"mha": 3 * t * e * e, "mha.attention": 2 * t * t * e, "mha.out_proj": t * e * e, "head": t * e * 3}
