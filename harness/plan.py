"""What a grid costs before it runs (``prunebench plan``): training images and PFLOP per (experiment, model,
dataset) row, every cell's own cost, and hours on a device from the benchmark figures.

Training FLOPs ≈ 6 × forward MACs × training images (dense kernels with masks), mask-selection passes included,
evaluation excluded; a shared dense pre-training is counted once, in the first row that needs it. Torch-free: a
model's size comes from the caller (``model_cost``), the hours from ``benchmarks/figures.json``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from harness.config import Manifest, RunSpec, image_size, train_size
from harness.figures import lookup
from harness.grid.expand import resources_for
from harness.pruning.methods import dense_spec, procedure

ModelCost = Callable[[str, float, int], tuple[int, int]]
"""(arch, width, classes) -> (parameters, forward MACs per image)."""


@dataclass(frozen=True)
class Row:
    experiment: str
    model: str
    dataset: str
    params: int
    seeds: int
    runs: int
    dense: int  # dense pre-trainings first needed by this row
    images: int  # training images: the runs', their mask selection's and those dense pre-trainings'
    flop: float
    methods: tuple[str, ...]
    spec: RunSpec  # one spec of the row (its model, training and resources)


def rows(specs: list[RunSpec], model_cost: ModelCost) -> list[Row]:
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for s in specs:
        groups[(s.experiment, s.model_key, s.dataset_key)].append(s)
    seen: set[str] = set()
    out = []
    for (exp, model, ds), ss in groups.items():
        images = 0
        n_dense = 0
        params, fwd = model_cost(ss[0].model.arch, ss[0].model.width, ss[0].num_classes, image_size(ss[0].dataset))
        n_train = train_size(ss[0].dataset)
        for s in ss:
            pre, own = procedure(s).images(s, n_train)
            images += own + procedure(s).selection_cost(s, n_train)
            dense = dense_spec(s)
            if dense is not None and dense.id not in seen:
                seen.add(dense.id)
                n_dense += 1
                images += pre
        out.append(Row(exp, model, ds, params, len({s.seed for s in ss}), len(ss), n_dense, images, 6.0 * fwd * images,
                       tuple(dict.fromkeys(s.method for s in ss)), ss[0]))
    return out


def summaries(specs: list[RunSpec]) -> list[tuple[list[str], str]]:
    """(methods, what they do) — one line per distinct procedure summary, in grid order."""
    by_line: dict[str, list[str]] = defaultdict(list)
    for s in specs:
        line = procedure(s).summary(s)
        if s.method not in by_line[line]:
            by_line[line].append(s.method)
    return [(methods, line) for line, methods in by_line.items()]


def cell_cost(s: RunSpec, model_cost: ModelCost) -> tuple[int, float]:
    """(training images, FLOPs) of one cell on its own (its shared dense pre-training not counted)."""
    n_train = train_size(s.dataset)
    own = sum(procedure(s).images(s, n_train)[1:]) + procedure(s).selection_cost(s, n_train)
    _, fwd = model_cost(s.model.arch, s.model.width, s.num_classes, image_size(s.dataset))
    return own, 6.0 * fwd * own


def trials_per_device(res, cuda: bool, cores: int) -> int:
    """How many trials of these resources share one device: 1/gpu on a GPU, cores/cpu on the CPU."""
    share = res.gpu if cuda else res.cpu / max(cores, 1)
    return max(1, int(1 / share + 1e-9)) if 0 < share < 1 else 1


@dataclass(frozen=True)
class Hours:
    row: Row
    hours: float
    figure: dict
    packed: dict | None  # the figure of the manifest's packing, where measured
    packed_hours: float
    trials: int  # trials per device as the manifest's resources pack them


@dataclass(frozen=True)
class HoursPlan:
    device: str
    cpu: bool  # the device is a CPU (figures per thread count)
    lines: list[Hours]
    missing: list[str]  # rows without a figure on this device
    known_devices: list[str]  # when no figure exists for the device at all: the devices that have some

    @property
    def total(self) -> float:
        return sum(h.hours for h in self.lines)

    @property
    def total_packed(self) -> float:
        return sum(h.packed_hours for h in self.lines)


def hours(manifest: Manifest, plan: list[Row], figures: list[dict], device: str, cores: int) -> HoursPlan:
    """Training hours of each row on ``device`` from the latest benchmark figure of its model (one trial at a time on
    its ``resources.cpu`` threads for a CPU; packed as the manifest's resources say, where measured)."""
    cpu = re.fullmatch(r"CPU .* x(\d+) threads", device)  # figures' CPU form; anything else is a GPU
    if cpu:
        cores = int(cpu.group(1))

    def on(threads: int) -> str:  # a CPU trial runs on as many threads as its resources.cpu
        return re.sub(r"x\d+ threads$", f"x{threads} threads", device) if cpu else device

    if not any(f["device"] in {device, *(on(t) for t in range(1, cores + 1))} for f in figures):
        return HoursPlan(device, bool(cpu), [], [], sorted({f["device"] for f in figures}))
    lines, missing = [], []
    for row in plan:
        s = row.spec
        t, arch, width = s.training, s.model.arch, s.model.width
        opts = dict(batch=t.batch_size, precision=t.precision, channels_last=t.channels_last, compile=t.compile)
        res = resources_for(manifest, s)
        fig = lookup(figures, arch, width, on(max(1, min(int(res.cpu), cores))), **opts) \
            or lookup(figures, arch, width, device, **opts)
        if fig is None:
            missing.append(f"{row.model} ({arch} width {width:g})")
            continue
        h = row.images / fig["images_per_s"] / 3600
        k = trials_per_device(res, cpu is None, cores)
        packed = lookup(figures, arch, width, device, trials=k, **opts) if k > 1 else None
        lines.append(Hours(row, h, fig, packed, row.images / packed["images_per_s"] / 3600 if packed else h, k))
    return HoursPlan(device, bool(cpu), lines, list(dict.fromkeys(missing)), [])
