"""The manifest schema: typed, frozen dataclasses (one per YAML mapping).

Field defaults are part of the schema's meaning: a field left at its default does not enter a
run's identity (see :mod:`harness.config.identity`), so a new field must default to the value
that keeps today's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal



class ManifestError(ValueError):
    """A user mistake in a manifest; ``str()`` is one line naming file, key and expectation."""


@dataclass(frozen=True)
class PaperInfo:
    key: str
    title: str
    venue: str
    year: int
    arxiv: str | None = None
    openreview: str | None = None
    code: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset as a run sees it: source, normalisation and augmentation."""

    source: str  # a dataset of the registry (harness.data.sources)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int
    pad_mode: Literal["zeros", "reflect"]
    hflip: bool
    train_subset: int | None = None
    test_subset: int | None = None
    validation: int = 0  # N training images held out, evaluated clean (memory: the last N, as PAGS's 5000 of 50k;
    # stream: a fixed random N, as a class-sorted folder's last images would be one class)
    augment: Literal["pad_crop_flip", "resized_crop_flip"] = "pad_crop_flip"  # the ImageNet recipe: streamed only
    image_size: int = 0  # training crop / evaluation size; 0: the source's
    eval_resize: int = 0  # resized_crop_flip: the short side before the evaluation centre crop; 0: the source's


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    width: float = 1.0
    init: str | None = None  # a named initialiser (harness.models.init.INITS) instead of the builder's own


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "adam", "sgd"]
    lr: float
    weight_decay: float  # always explicit: AdamW's silent default 0.01 is written out
    betas: tuple[float, float] | None = None
    eps: float | None = None
    momentum: float | None = None
    nesterov: bool = False


@dataclass(frozen=True)
class LRScheduleConfig:
    """``constant``; ``multistep`` (milestones, gamma); ``warmup_fixed`` (AP, ap.md 3): per iteration
    of each training, the released script adds ``warmup_per_iter`` before every step, so 0-based step
    ``i`` trains at ``(i + 1) * warmup_per_iter`` (summed increment by increment, as the script does),
    held after ``warmup_iters`` increments, and overridden from 0-based epoch ``e`` on by the absolute
    ``lr`` of the latest ``fixed`` entry ``[e, lr]`` with ``e <= epoch``."""

    name: Literal["constant", "multistep", "warmup_fixed"]
    milestones: tuple[str, ...] = ()  # durations, e.g. ["150ep", "225ep"]
    gamma: float = 0.1
    warmup_per_iter: float = 0.0  # warmup_fixed: LR added per iteration
    warmup_iters: int = 0  # warmup_fixed: iterations of warm-up (the LR then holds)
    fixed: tuple[tuple[int, float], ...] = ()  # warmup_fixed: [0-based epoch, absolute LR] overrides


@dataclass(frozen=True)
class TrainingConfig:
    optimizer: OptimizerConfig
    lr_schedule: LRScheduleConfig
    batch_size: int
    drop_last: bool
    pretrain: str  # duration: "50000it" or "300ep" (dense pre-training, or the whole run)
    retrain: str = "0it"  # per pruning round (iterative procedures)
    # bf16: autocast of the forward pass and loss (CUDA and CPU); changes numerics, so a manifest that
    # turns it on lists the deviation ``bf16_autocast``
    precision: Literal["fp32", "bf16"] = "fp32"
    # the GPU fast path (harness.train.FastPath); neither changes what is computed, only how
    channels_last: bool = False  # model and input batches in NHWC memory format
    compile: bool = False  # torch.compile of the forward pass and loss (compile time reported as compile_s)


Variant = Literal["pags_snip_fixed", "iclr23_rm", "iclr23_sm"]
Reference = Literal["origin", "init"]
VARIANTS: tuple[str, ...] = ("pags_snip_fixed", "iclr23_rm", "iclr23_sm")
REFERENCES: tuple[str, ...] = ("origin", "init")


@dataclass(frozen=True)
class GraphParams:
    """The switches of the mask-graph distance (pags.md section 3.3). They belong in the run identity.

    ``variant``: the Ramanujan-gap formula (:data:`VARIANTS`). ``reference``: ``"origin"`` (PAGS_SNIP) or
    ``"init"`` (distance from the dense/initial network's coordinate). ``min_edges`` / ``min_density``: a layer
    counts only with strictly more kept edges and a strictly higher density. ``nested``: add the nested
    regular (IMDB) term as a third coordinate.
    """

    variant: Variant = "pags_snip_fixed"
    reference: Reference = "origin"
    min_edges: int = 1000
    min_density: float = 1e-3
    nested: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ramanujan gap variant '{self.variant}' (expected one of: {', '.join(VARIANTS)})")
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown distance reference '{self.reference}' "
                             f"(expected one of: {', '.join(REFERENCES)})")
        if isinstance(self.min_edges, bool) or not isinstance(self.min_edges, int) or self.min_edges < 0:
            raise ValueError(f"min_edges must be a non-negative int, got {self.min_edges!r}")
        if isinstance(self.min_density, bool) or not isinstance(self.min_density, (int, float)) \
                or not 0.0 <= float(self.min_density) < 1.0:
            raise ValueError(f"min_density must be a number in [0, 1), got {self.min_density!r}")
        if not isinstance(self.nested, bool):
            raise ValueError(f"nested must be a bool, got {self.nested!r}")
        object.__setattr__(self, "min_density", float(self.min_density))


@dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated. Never part of a dense model's identity."""

    batch_size: int
    train_examples: int | None = None  # None = the whole split
    test_examples: int | None = None
    train_augmented: bool = True  # LAMP measures train accuracy on augmented images
    epochs: tuple[str, ...] = ()  # single-stage procedures: extra evaluations at these durations
    every: str | None = None  # ... or every this often (e.g. "1ep"); the end is always evaluated
    snapshots: str | None = None  # single-stage procedures: every this often (e.g. "1500it") a `snapshot` row: the
    #                               mask-graph metrics of the current mask and the model's accuracy at that step
    graph: GraphParams = GraphParams()  # mask-graph metrics of every run's final mask (pags.md 3.3)


@dataclass(frozen=True)
class PruningConfig:
    """What may be pruned, plus one raw parameter section per procedure (``pruning.<procedure>``).

    The sections are validated against each procedure's typed parameters when a cell is resolved
    (:func:`harness.config.resolve.resolve_cell`), because methods and experiments can override them.
    """

    prunable: Literal["conv_and_linear_weights", "conv_weights", "all_weights"]
    sections: dict = field(default_factory=dict)  # procedure name -> raw mapping (not a YAML key)


@dataclass(frozen=True)
class MethodConfig:
    """A manifest-local method (``methods.<key>``): a registered method with its own parameters (``method``), or a
    new one composed of a registered procedure, score and allocation (a plugin's, typically)."""

    method: str | None = None
    params: dict = field(default_factory=dict)
    description: str | None = None
    procedure: str | None = None
    score: str | None = None
    allocation: str | None = None


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Layout:
    """How an experiment's table is laid out (``experiments[i].layout``).

    * ``by_round``: rows (model, method), one column per round labelled by remaining weights (LAMP);
    * ``by_sparsity``: rows model, one column per method at each target sparsity, plus the dense
      baseline (DPF);
    * ``paired``: rows (model, base method), column pairs ``base`` / ``base + modifier`` per density
      with their difference (AP, PAGS). ``pairs`` lists (base, modified) method keys.
    """

    kind: Literal["by_round", "by_sparsity", "paired"] = "by_round"
    metric: str = "test_acc"  # the value of a cell: any tracked metric
    columns: tuple[str, ...] = ()  # extra tracked metrics shown beside it
    pairs: tuple[tuple[str, str], ...] = ()
    dense_method: str | None = None  # by_sparsity: the method whose runs are the dense column
    collapse_points: float = 5.0  # a seed ending within this many points of chance while its dense model learned


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    methods: tuple[str, ...]
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    sparsities: tuple[float, ...] = ()  # target sparsities, for procedures that take one
    model_sparsities: dict[str, tuple[float, ...]] = field(default_factory=dict)  # per model, instead
    overrides: dict = field(default_factory=dict)  # deep-merged over defaults
    model_overrides: dict = field(default_factory=dict)  # model key -> deep-merged overrides
    resources: Resources | None = None
    layout: Layout = Layout()
    note: str | None = None
    paper_title: str | None = None  # the manifest's own title when a profile retitles it (not a YAML key)


@dataclass(frozen=True)
class ExpectedCells:
    """A published number for one or more grid cells; ``value: null`` until recorded.

    ``kind: paper`` is the paper's own table or figure; ``kind: reference`` is a number obtained
    with the paper's released code (or a predecessor's), shown in its own column, never as the
    paper's. ``rounds`` selects round cells, ``sparsities`` target-sparsity cells.
    """

    experiment: str
    models: tuple[str, ...]
    methods: tuple[str, ...]
    value: float | None
    rounds: tuple[int, ...] = ()
    sparsities: tuple[float, ...] = ()
    tolerance: float | None = None
    datasets: tuple[str, ...] = ()
    kind: Literal["paper", "reference"] = "paper"
    metric: str = "test_acc"
    source: str | None = None


@dataclass(frozen=True)
class NoiseRule:
    """When is a gap between two means more than the seeds' spread allows?

    ``stderr``: ``a`` is below ``b`` beyond noise when ``mean_b - mean_a - margin > k * se`` with
    ``se = sqrt(sd_a^2/n_a + sd_b^2/n_b)`` (sample standard deviations over seeds); with fewer than
    two seeds on either side there is no spread to judge by and the plain comparison decides.
    ``none``: the plain comparison of means decides.
    """

    rule: Literal["stderr", "none"] = "stderr"
    k: float = 2.0


CLAIM_KINDS = ("compare", "fails", "reaches_dense", "correlation")


@dataclass(frozen=True)
class Claim:
    """A paper's statement in checkable form, over the result cells of ``experiment`` whose mean
    density of ``a`` lies in ``[min_density, max_density]`` (for each listed model, or all):

    * ``compare`` (default): ``a`` is at least each of ``b`` on ``metric`` (within ``margin``
      points; at most, when ``higher_is_better`` is false), judged against the seeds' noise;
    * ``fails``: ``a`` does not converge: every seed of every compared cell diverged or ended
      within ``margin`` points of chance (1 / classes);
    * ``reaches_dense``: ``a`` is within ``margin`` points of the dense model (``b``: the dense
      method's runs; empty: ``a``'s own round 0), judged against the seeds' noise;
    * ``correlation``: over a population (``population``: every seed's result rows, or every
      ``snapshots`` row of every seed) of ``a`` (and ``b``), ``metric`` correlates with ``against``
      (``statistic`` Pearson or Spearman) with coefficient >= ``min_r`` (<= -``min_r`` when
      ``higher_is_better`` is false); a bootstrap over the population (``bootstrap`` resamples)
      gives the 95% interval that separates *held* from *within noise*.
    """

    id: str
    text: str
    experiment: str
    a: str
    b: tuple[str, ...] = ()
    kind: Literal["compare", "fails", "reaches_dense", "correlation"] = "compare"
    max_density: float = 1.0
    min_density: float = 0.0
    window: str = "density"  # the density metric the window is on (e.g. density_conv_linear: AP's conv + linear)
    margin: float = 0.0
    metric: str = "test_acc"
    higher_is_better: bool = True
    noise: NoiseRule = NoiseRule()
    models: tuple[str, ...] = ()
    against: str | None = None  # correlation: the second metric
    population: Literal["runs", "snapshots"] = "runs"  # correlation: what one point is
    statistic: Literal["pearson", "spearman"] = "pearson"
    min_r: float = 0.5
    bootstrap: int = 1000
    source: str | None = None


@dataclass(frozen=True)
class Deviation:
    name: str
    reason: str


@dataclass(frozen=True)
class Defaults:
    training: TrainingConfig
    eval: EvalConfig


@dataclass(frozen=True)
class Manifest:
    paper: PaperInfo
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelConfig]
    defaults: Defaults
    pruning: PruningConfig
    experiments: tuple[Experiment, ...]
    methods: dict[str, MethodConfig] = field(default_factory=dict)
    resources: Resources = Resources()
    expected: tuple[ExpectedCells, ...] = ()
    claims: tuple[Claim, ...] = ()
    deviations: tuple[Deviation, ...] = ()
    profiles: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()  # installed plugin names or module paths, imported before validation
    # set by load(): not part of the YAML
    profile: str = "full"
    path: str = ""
    digest: str = ""
    overlay: str = ""  # the overlay's name when the manifest `extends:` a paper's manifest

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.experiments if e.name == name)

    @property
    def label(self) -> str:
        """The profile, and the overlay when there is one (``ci+taylor``): names the report folder and MLflow groups,
        so an overlay's report never overwrites the paper's own."""
        return f"{self.profile}+{self.overlay}" if self.overlay else self.profile


NOT_YAML = {"Manifest": ("profile", "path", "digest", "overlay"), "PruningConfig": ("sections",), "Experiment": ("paper_title",)}
