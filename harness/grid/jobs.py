"""Jobs: what the executors run. A dense pre-training and a pruning run are two kinds of one interface (run,
folder, done, artifacts, what MLflow shows), so no executor asks which kind it holds.

:func:`plan_jobs` turns a grid's specs into the dense jobs (deduplicated by content: shared by every method,
sparsity and experiment that starts from them) and the run jobs, each with its MLflow name, tags and description.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness import stage
from harness.config import DenseSpec, EvalConfig, Manifest, RunSpec
from harness.config.load import dense_from_dict, run_from_dict
from harness.config.build import build
from harness.grid import describe
from harness.grid.expand import resources_for
from harness.paths import Paths
from harness.pruning.methods import dense_spec, procedure
from harness.stage import Context


@dataclass(frozen=True)
class Job:
    spec: RunSpec | DenseSpec
    name: str  # the run's path (MLflow tag prunebench.path)
    display: str  # the short name the MLflow UI shows
    tags: dict
    cpu: float
    gpu: float
    dataset_key: str
    group: tuple[str, str, str]  # parent run: (key, name, description)
    about: str  # the first half of the run's description (what it is)
    kind: ClassVar[str]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def needs(self) -> str | None:
        """The id of the dense job this one starts from, if any."""
        return None

    def folder(self, paths: Paths) -> Path:
        return stage.folder(paths, self.spec).dir

    def done(self, paths: Paths) -> bool:
        """DONE or DIVERGED on disk: nothing more to run."""
        return stage.finished(paths, self.spec)

    def diverged(self, paths: Paths) -> dict | None:
        return stage.diverged_info(paths, self.spec)

    def run(self, ctx: Context) -> None:  # trains (or resumes) and reports its rows through ctx
        raise NotImplementedError

    def artifacts(self, paths: Paths) -> list[Path]:
        raise NotImplementedError

    def outcome(self, paths: Paths) -> str:
        """The second half of the run's description: what it reached."""
        raise NotImplementedError

    def evaluations(self) -> int:
        """Rows a finished job reports (the progress bar's unit)."""
        raise NotImplementedError

    def config(self) -> dict:
        """What a Ray trial needs to rebuild the job's work (plain data)."""
        return {"kind": self.kind, "spec": dataclasses.asdict(self.spec)}


@dataclass(frozen=True)
class DenseJob(Job):
    eval: EvalConfig | None = None  # how the dense model is evaluated for its MLflow run
    kind: ClassVar[str] = "dense"

    def run(self, ctx: Context) -> None:
        ctx.report(stage.run_dense(self.spec, ctx, self.eval))

    def artifacts(self, paths: Paths) -> list[Path]:
        f = stage.folder(paths, self.spec)
        return [f.spec, f.train]

    def outcome(self, paths: Paths) -> str:
        info = self.diverged(paths)
        return describe.diverged(info) if info else describe.DENSE_OUTCOME

    def evaluations(self) -> int:
        return 1

    def config(self) -> dict:
        return {**super().config(), "eval": dataclasses.asdict(self.eval) if self.eval else None}


@dataclass(frozen=True)
class RunJob(Job):
    kind: ClassVar[str] = "run"

    @property
    def needs(self) -> str | None:
        dense = dense_spec(self.spec)
        return dense.id if dense is not None else None

    def ready(self, paths: Paths) -> bool:
        """Its dense model (if it starts from one) is finished."""
        dense = dense_spec(self.spec)
        return dense is None or stage.finished(paths, dense)

    def run(self, ctx: Context) -> None:
        stage.run_spec(self.spec, ctx)

    def artifacts(self, paths: Paths) -> list[Path]:
        return stage.folder(paths, self.spec).artifacts()

    def outcome(self, paths: Paths) -> str:
        info = self.diverged(paths)
        if info:
            return describe.diverged(info)
        rows = stage.read_rows(paths, self.spec)
        return describe.reached(rows[-1] if rows else {})

    def evaluations(self) -> int:
        return len(procedure(self.spec).planned_rows(self.spec))


def job_from_config(config: dict) -> Job:
    """The job a :meth:`Job.config` describes, for running it (a Ray trial); its MLflow fields are left blank
    (only the driver writes to MLflow)."""
    blank = dict(name="", display="", tags={}, cpu=0.0, gpu=0.0, dataset_key="", group=("", "", ""), about="")
    if config["kind"] == "dense":
        ev = build(EvalConfig, config["eval"], "<spec>", "eval") if config.get("eval") else None
        return DenseJob(dense_from_dict(config["spec"]), eval=ev, **blank)
    return RunJob(run_from_dict(config["spec"]), **blank)


def plan_jobs(manifest: Manifest, specs: list[RunSpec], report: Path | None = None) -> tuple[list[DenseJob], list[RunJob]]:
    """The dense jobs (deduplicated by content) and the run jobs of ``specs``."""
    report = report or Path("reports") / manifest.paper.key / manifest.label
    dense: dict[str, DenseJob] = {}
    runs: list[RunJob] = []
    for s in specs:
        res = resources_for(manifest, s)
        d = dense_spec(s)
        if d is not None and d.id not in dense:
            group = (f"{manifest.label}/dense", f"dense pre-trainings · {manifest.label}",
                     "The dense models the pruning runs start from (content-addressed, shared).")
            dense[d.id] = DenseJob(
                d, describe.run_name(d, s.model_key, s.dataset_key), describe.display_name(d, s.model_key, s.dataset_key),
                describe.run_tags(d, manifest, s.model_key, s.dataset_key), res.cpu, res.gpu, s.dataset_key,
                group, describe.about_dense(s.model_key, s.dataset_key, s.seed), eval=s.eval)
        e = manifest.experiment(s.experiment)
        group = (f"{manifest.label}/{s.experiment}", f"{s.experiment} · {manifest.label}", e.title)
        runs.append(RunJob(s, describe.run_name(s), describe.display_name(s), describe.run_tags(s, manifest), res.cpu,
                           res.gpu, s.dataset_key, group, describe.about_run(manifest, s, report)))
    return list(dense.values()), runs
