"""MLflow: one experiment per paper, one run per grid cell (and per dense pre-training).

Only the driver process writes (trials report through Ray Tune), so parallel trials never
contend for the SQLite file. A run is found again by its ``prunebench.run_id`` tag, so a
resumed grid reuses its MLflow runs instead of duplicating them, and a replayed row is not
logged twice.

Rows (see :mod:`harness.pruning.methods.base`) are logged with every numeric value they carry:
a ``round`` or ``epoch`` row at MLflow step = its index (plus the index itself as the metric
``round``/``epoch``, the x-axis for the UI's charts), the ``final`` row as ``final/<metric>``;
a nested dict of numbers (per-layer values) as ``<key>/<name>``; a round row's per-epoch evaluations
(``epochs``, AP's recorded retraining) as ``retrain/<metric>`` on one continuous epoch axis; a
``snapshot`` row (``eval.snapshots``) as ``snapshot/<metric>`` at MLflow step = the training step.
A diverged run is FAILED with the tags ``prunebench.diverged`` and ``prunebench.diverged_step``.

For the MLflow UI: each paper's experiment is marked a model-training experiment; a run has a
short name (method · model · dataset · seed) with its full path in the tag ``prunebench.path``, a
parent run per (profile, paper experiment) so the UI groups the grid, its dataset as an MLflow
dataset input (content digest, split sizes), and a description (``mlflow.note.content``). A
report is logged as the artifacts of a run ``report · <profile>``, replaced when rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, Metric, Param
from mlflow.tracking import MlflowClient

from harness import __version__
from harness.config import DenseSpec, RunSpec
from harness.locks import exclusive

RUN_ID_TAG = "prunebench.run_id"
AXIS_TAG = "prunebench.axis"
DIVERGED_TAG = "prunebench.diverged"
DIVERGED_STEP_TAG = "prunebench.diverged_step"
FINAL = "final/"
RETRAIN = "retrain/"  # per-epoch metrics of a round's recorded retraining (AP), their own x-axis
SNAPSHOT = "snapshot/"  # snapshot rows (eval.snapshots): their own x-axis, the training step
PATH_TAG = "prunebench.path"
GROUP_TAG = "prunebench.group"  # set on the parent runs that group a (profile, paper experiment)
REPORT_TAG = "prunebench.report"  # set on the run holding a profile's report
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def _numeric(row: dict, prefix: str = "") -> dict[str, float]:
    """A row's finite numeric values; a nested dict of numbers (e.g. ``dnr_layers``: site -> rate) is flattened
    to ``<key>/<site>``; lists (e.g. ``epochs``) are left to :func:`_epoch_metrics`."""
    out = {}
    for k, v in row.items():
        if k in ("axis", "index") or isinstance(v, bool):
            continue
        if isinstance(v, dict):
            out.update(_numeric(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not math.isnan(float(v)):
            out[f"{prefix}{k}"] = float(v)
    return out


def _epoch_metrics(row: dict, ts: int) -> list[Metric]:
    """The per-epoch evaluations a round row carries (``epochs``: AP's recorded retraining) as ``retrain/<metric>``
    at step ``(round - 1) * epochs + epoch`` (one continuous x-axis over the cycles), with ``retrain/round`` and
    ``retrain/epoch`` as metrics at the same step."""
    epochs = row.get("epochs") or []
    out = []
    for e in epochs:
        step = (int(row["index"]) - 1) * len(epochs) + int(e["epoch"])
        values = {**_numeric({k: v for k, v in e.items() if k != "epoch"}), "round": float(row["index"]),
                  "epoch": float(e["epoch"])}
        out += [Metric(RETRAIN + k, v, ts, step) for k, v in values.items()]
    return out


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<git sha>[.dirty]`` when run from a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return __version__


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


_TRANSIENT = re.compile(r"database is locked|Max retries exceeded|Connection refused|Connection reset|RemoteDisconnected|"
                        r"Connection aborted|error code 5\d\d|5\d\d error responses|timed out|OperationalError|"
                        r"server closed the connection|terminating connection|could not connect|connection .* failed",
                        re.IGNORECASE)


def transient(e: BaseException) -> bool:
    """A tracking error worth retrying: the store is busy (SQLite lock), restarting or unreachable."""
    import requests
    import sqlalchemy.exc

    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                      sqlalchemy.exc.OperationalError, ConnectionError, TimeoutError)):
        return True
    return bool(_TRANSIENT.search(f"{type(e).__name__}: {e}"))


class RetryingClient:
    """An MlflowClient whose calls are retried with backoff while the store is busy or down (a
    restarting tracking server or database), for up to ``PRUNEBENCH_TRACKING_RETRY_S`` seconds
    (default 900) per call; a write is never dropped silently, and every other error passes."""

    def __init__(self, client: MlflowClient, patience_s: float | None = None, log=None):
        self._client = client
        self._patience = float(patience_s if patience_s is not None
                               else os.environ.get("PRUNEBENCH_TRACKING_RETRY_S", "900"))
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            deadline, wait, warned = time.monotonic() + self._patience, 0.5, False
            while True:
                try:
                    result = attr(*args, **kwargs)
                    if warned:
                        self._log(f"prunebench: tracking store {self._client.tracking_uri} reachable again")
                    return result
                except Exception as e:
                    if not transient(e) or time.monotonic() + wait > deadline:
                        raise
                    if not warned:
                        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                        self._log(f"prunebench: tracking store {self._client.tracking_uri} unavailable ({first}); "
                                  f"retrying for up to {self._patience:.0f} s")
                        warned = True
                    time.sleep(wait)
                    wait = min(wait * 2, 10.0)

        return call


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


class Tracker:
    """A thin MlflowClient wrapper; every write happens in the calling (driver) process.

    Several drivers may share one store: creating (or migrating) a SQLite store, a paper's
    experiment, a grouping run or a spec's run happens under an advisory lock (``<db>.lock`` for
    SQLite, else ``lock`` when given: the work directory's), so none is created twice."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None, lock: Path | None = None):
        db = _sqlite_path(tracking_uri)
        self.lock = db.with_name(db.name + ".lock") if db is not None else lock
        if tracking_uri.startswith(("http://", "https://")):  # MLflow's own retries short (its default
            # backoff reaches minutes between attempts); RetryingClient waits out a server restart
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            # and a request left unanswered gives up after 60 s, not 120 s (x 3 tries: 6 minutes without a word)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        with self._locked() if db is not None else contextlib.nullcontext():  # MlflowClient creates or
            # migrates a SQLite store: once, whoever else opens it now
            self.client = RetryingClient(MlflowClient(tracking_uri=tracking_uri))
            if db is not None:
                self.client.search_experiments(max_results=1)
        self.artifact_root = artifact_root
        self._logged_steps: dict[str, set[int]] = {}
        self._parents: dict[tuple[str, str], str] = {}

    def _locked(self):
        """The store's cross-process lock (a no-op without one)."""
        return exclusive(self.lock) if self.lock is not None else contextlib.nullcontext()

    def experiment_id(self, paper: str) -> str:
        """The paper's experiment (created on first use), marked a model-training experiment."""
        exp = self.client.get_experiment_by_name(paper)
        if exp is None:
            with self._locked():
                exp = self.client.get_experiment_by_name(paper)
                if exp is None:
                    location = (self.artifact_root / paper).as_uri() if self.artifact_root else None
                    return self.client.create_experiment(paper, artifact_location=location,
                                                         tags={KIND_TAG: MODEL_TRAINING})
        if exp.tags.get(KIND_TAG) != MODEL_TRAINING:
            self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
        return exp.experiment_id

    def _tagged_run(self, paper: str, tag: str, value: str, name: str, tags: dict[str, str]) -> str:
        """The run carrying ``tag = value`` in the paper's experiment, created FINISHED if missing."""
        eid = self.experiment_id(paper)
        with self._locked():
            found = self.client.search_runs([eid], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
            if found:
                return found[0].info.run_id
            run = self.client.create_run(eid, run_name=name, tags={tag: value, **tags})
            self.client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id

    def parent(self, paper: str, group: str, name: str, description: str) -> str:
        """The parent run of a (profile, paper experiment) group: the UI nests the grid under it."""
        key = (paper, group)
        if key not in self._parents:
            self._parents[key] = self._tagged_run(paper, GROUP_TAG, group, name, {NOTE_TAG: description})
        return self._parents[key]

    def find(self, paper: str, run_id: str):
        """The MLflow run of a prunebench run id, or None."""
        exp = self.client.get_experiment_by_name(paper)
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
                                       max_results=1)
        return runs[0] if runs else None

    def finished_ids(self, paper: str) -> set[str]:
        """Run ids whose MLflow run is complete: FINISHED, or FAILED because it diverged."""
        exp = self.client.get_experiment_by_name(paper)
        if exp is None:
            return set()
        runs = self.client.search_runs([exp.experiment_id], filter_string="attributes.status != 'RUNNING'",
                                       max_results=50_000)
        return {r.data.tags.get(RUN_ID_TAG) for r in runs
                if r.info.status == "FINISHED" or r.data.tags.get(DIVERGED_TAG) == "true"}

    def open(self, paper: str, spec: RunSpec | DenseSpec, tags: dict[str, str], name: str,
             parent: str | None = None) -> str:
        """The MLflow run id for ``spec``: the existing one (resumed) or a new one (under ``parent``)."""
        eid = self.experiment_id(paper)
        with self._locked():
            existing = self.find(paper, spec.id)
            if existing is not None:
                mid = existing.info.run_id
                if existing.info.status != "RUNNING":
                    self.client.update_run(mid, status="RUNNING")
                return mid
            if parent is not None:
                tags = {**tags, "mlflow.parentRunId": parent}
            run = self.client.create_run(eid, run_name=name, tags=tags)
        params = [Param(k, v) for k, v in _flatten(dataclasses.asdict(spec)).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        return run.info.run_id

    def _logged(self, mlflow_run_id: str) -> set[tuple[str, int]]:
        logged = self._logged_steps.get(mlflow_run_id)
        if logged is None:
            run = self.client.get_run(mlflow_run_id)
            logged = {("final", 0)} if any(k.startswith(FINAL) for k in run.data.metrics) else set()
            for axis, key in (("round", "round"), ("epoch", "epoch"), ("snapshot", SNAPSHOT + "step")):
                if key in run.data.metrics:
                    logged |= {(axis, m.step) for m in self.client.get_metric_history(mlflow_run_id, key)}
            self._logged_steps[mlflow_run_id] = logged
        return logged

    def log_row(self, mlflow_run_id: str, row: dict) -> None:
        """One batched write per row; a row already logged (a replay) is skipped."""
        axis, index = row["axis"], int(row["index"])
        logged = self._logged(mlflow_run_id)
        if (axis, index) in logged:
            return
        ts = int(time.time() * 1000)
        values = _numeric(row)
        if axis == "final":
            metrics = [Metric(FINAL + k, v, ts, 0) for k, v in values.items()]
        elif axis == "snapshot":  # the step metric last, as the axis metric of the other rows
            metrics = [Metric(SNAPSHOT + k, v, ts, index) for k, v in values.items()] + [
                Metric(SNAPSHOT + "step", float(index), ts, index)]
        else:  # the row's own metrics last: a write cut short is re-sent whole (the row is not marked logged)
            metrics = _epoch_metrics(row, ts) + [Metric(k, v, ts, index) for k, v in values.items()] + [
                Metric(axis, float(index), ts, index)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(mlflow_run_id, metrics=metrics[i:i + 1000])
        logged.add((axis, index))

    def log_dataset(self, mlflow_run_id: str, name: str, record: dict) -> None:
        """The run's data as an MLflow dataset input (the UI's Dataset column and dataset view)."""
        source = {"dataset": record["source"], "train_subset": record.get("train_subset"),
                  "test_subset": record.get("test_subset")}
        profile = {k: record[k] for k in ("train", "validation", "test")}
        dataset = Dataset(name=name, digest=record["digest"], source_type="prunebench",
                          source=json.dumps(source, sort_keys=True), profile=json.dumps(profile, sort_keys=True))
        self.client.log_inputs(mlflow_run_id, datasets=[DatasetInput(dataset=dataset)])

    def describe(self, mlflow_run_id: str, text: str) -> None:
        self.client.set_tag(mlflow_run_id, NOTE_TAG, text)

    def log_report(self, paper: str, profile: str, files: list[Path], description: str) -> str:
        """The report's files as artifacts of the run ``report · <profile>`` (replaced when rebuilt)."""
        mid = self._tagged_run(paper, REPORT_TAG, profile, f"report · {profile}", {})
        for f in files:
            self.client.log_artifact(mid, str(f), artifact_path="report")
        self.describe(mid, description)
        return mid

    def mark_diverged(self, mlflow_run_id: str, step: int) -> None:
        self.client.set_tag(mlflow_run_id, DIVERGED_TAG, "true")
        self.client.set_tag(mlflow_run_id, DIVERGED_STEP_TAG, str(step))

    def log_artifacts(self, mlflow_run_id: str, paths: list[Path]) -> None:
        for p in paths:
            if p.exists():
                self.client.log_artifact(mlflow_run_id, str(p))

    def close(self, mlflow_run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(mlflow_run_id, status=status)

    def rows(self, mlflow_run_id: str) -> dict[str, dict[int, dict[str, float]]]:
        """axis -> index -> {metric: value} (the latest value logged for that index)."""
        run = self.client.get_run(mlflow_run_id)
        axis = run.data.tags.get(AXIS_TAG, "round")
        out: dict[str, dict[int, dict[str, float]]] = {}
        for key, value in run.data.metrics.items():
            if key.startswith(FINAL):
                out.setdefault("final", {}).setdefault(0, {})[key[len(FINAL):]] = value
            elif key.startswith(RETRAIN):
                for m in self.client.get_metric_history(mlflow_run_id, key):
                    out.setdefault("retrain", {}).setdefault(m.step, {})[key[len(RETRAIN):]] = m.value
            elif key.startswith(SNAPSHOT):
                if key == SNAPSHOT + "step":
                    continue
                for m in self.client.get_metric_history(mlflow_run_id, key):
                    out.setdefault("snapshot", {}).setdefault(m.step, {})[key[len(SNAPSHOT):]] = m.value
            elif key not in ("round", "epoch"):
                for m in self.client.get_metric_history(mlflow_run_id, key):
                    out.setdefault(axis, {}).setdefault(m.step, {})[key] = m.value
        return out
