"""Hand-made inputs for the report tests (no tests here): schema objects built directly, a fake
RunSpec with the fields the report reads and its fake procedure, a fake tracker and RunResult helpers. A module that
uses FakeSpec marks itself ``pytestmark = pytest.mark.usefixtures("fake_procedure")``."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from harness.config.schema import Claim, Deviation, ExpectedCells, Experiment, Layout, Manifest, PaperInfo
from harness.pruning.methods.base import Procedure
from harness.report import RunResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeProcedure(Procedure):
    """A procedure whose planned rows are the fake spec's own (registered as ``toy_fake`` by the ``fake_procedure``
    fixture of tests/conftest.py); it starts from a dense model when its first row is round 0."""

    name = "toy_fake"
    axis = "round"

    def planned_rows(self, spec: "FakeSpec") -> list[tuple[str, int]]:
        return list(spec.planned)

    def dense_spec(self, spec: "FakeSpec") -> object | None:
        return object() if spec.planned and spec.planned[0] == ("round", 0) else None


def _dataset() -> SimpleNamespace:
    return SimpleNamespace(source="cifar10", train_subset=None, test_subset=None)


def _model() -> SimpleNamespace:
    return SimpleNamespace(arch="vgg16_bn", width=1.0)


def _training() -> SimpleNamespace:
    return SimpleNamespace(pretrain="20it", retrain="5it", batch_size=100)


@dataclass(frozen=True)
class FakeSpec:
    """The RunSpec fields the report reads, with its planned rows given directly."""

    experiment: str
    method: str
    model_key: str
    seed: int
    dataset_key: str = "cifar10"
    target_sparsity: float | None = None
    planned: tuple[tuple[str, int], ...] = ()
    paper: str = "toy"
    num_classes: int = 0  # 0: chance unknown (no collapse marking)
    procedure: str = "toy_fake"
    dataset: SimpleNamespace = field(default_factory=_dataset)  # what the report's "Ran:" line reads
    model: SimpleNamespace = field(default_factory=_model)
    training: SimpleNamespace = field(default_factory=_training)

    @property
    def id(self) -> str:
        t = "" if self.target_sparsity is None else f"-sp{self.target_sparsity:g}"
        return f"{self.experiment}-{self.dataset_key}-{self.model_key}-{self.method}{t}-s{self.seed}"


def rounds(r: int) -> tuple[tuple[str, int], ...]:
    return tuple(("round", i) for i in range(r + 1)) + (("final", 0),)


FINAL = (("final", 0),)


def experiment(name: str = "main", methods=("global", "lamp"), models=("vgg16",), seeds=(0, 1),
               datasets=("cifar10",), layout: Layout = Layout(), sparsities=(), title: str | None = None) -> Experiment:
    return Experiment(name=name, title=title or f"Experiment {name}", methods=tuple(methods), models=tuple(models),
                      datasets=tuple(datasets), seeds=tuple(seeds), sparsities=tuple(sparsities), layout=layout)


def manifest(*experiments: Experiment, expected=(), claims=(), deviations=(Deviation("toy", "a toy reason"),),
             profile: str = "ci") -> Manifest:
    # the report reads paper, experiments, expected, claims, deviations, profile, path and digest only
    return Manifest(paper=PaperInfo(key="toy", title="A Toy Paper", venue="ICLR", year=2021, arxiv="2010.07611",
                                    code="someone/toy", commit="abc123"),
                    datasets={}, models={}, defaults=None, pruning=None, experiments=tuple(experiments),
                    expected=tuple(expected), claims=tuple(claims), deviations=tuple(deviations), profile=profile,
                    path="/somewhere/toy.yaml", digest="0123456789abcdef")


def specs_for(e: Experiment, planned, targets=(None,), num_classes: int = 0) -> list[FakeSpec]:
    return [FakeSpec(e.name, method, model, seed, dataset, t, tuple(planned), num_classes=num_classes)
            for model in e.models for dataset in e.datasets for method in e.methods for t in targets for seed in e.seeds]


def run(rows: dict | None = None, status: str = "FINISHED", diverged: bool = False, step: int | None = None) -> RunResult:
    return RunResult(rows=rows or {}, status=status, diverged=diverged, diverged_step=step)


def round_run(accs: list[float], densities: list[float] | None = None, **extra) -> RunResult:
    """Round rows 0..R with these test accuracies (fractions) and densities (default 0.8^r), and a
    final row equal to the last round."""
    densities = densities or [0.8 ** r for r in range(len(accs))]
    rows = {r: {"test_acc": a, "density": d, "density_all": d + 0.001, **{k: v[r] for k, v in extra.items()}}
            for r, (a, d) in enumerate(zip(accs, densities))}
    return run({"round": rows, "final": {0: dict(rows[len(accs) - 1])}})


def final_run(acc: float, density: float, density_all: float | None = None, **extra) -> RunResult:
    return run({"final": {0: {"test_acc": acc, "density": density,
                              "density_all": density if density_all is None else density_all, **extra}}})


def claim(**kw) -> Claim:
    base = dict(id="lamp_wins", text="LAMP beats global", experiment="main", a="lamp", b=("global",), max_density=1.0)
    return Claim(**{**base, **kw})


def expected(**kw) -> ExpectedCells:
    base = dict(experiment="main", models=("vgg16",), methods=("lamp",), value=None)
    return ExpectedCells(**{**base, **kw})


class FakeTracker:
    """find/rows as harness.tracking.Tracker: runs keyed by prunebench run id."""

    def __init__(self, runs: dict[str, tuple[dict, str, dict]]):
        self.runs = runs  # run id -> (rows, status, tags)
        self.asked: list[tuple[str, str]] = []

    def find(self, paper: str, run_id: str):
        self.asked.append((paper, run_id))
        if run_id not in self.runs:
            return None
        _, status, tags = self.runs[run_id]
        return SimpleNamespace(info=SimpleNamespace(run_id="mlflow-" + run_id, status=status),
                               data=SimpleNamespace(tags=tags))

    def rows(self, mlflow_run_id: str) -> dict:
        return self.runs[mlflow_run_id.removeprefix("mlflow-")][0]
