"""The Ray executor: one Ray Tune trial per job, dense pre-trainings first (phase ``dense``), then the runs.

Trials report one row per evaluation through ``tune.report``; the driver-side :class:`TrackingCallback` logs each row
to MLflow in one batched call (parallel trials never write the store), draws the progress bar and prints one line per
finished trial. A trial whose worker or node is lost is retried (``PRUNEBENCH_TRIAL_RETRIES``, default 3) and
resumes from its run folder's last checkpoint in the same MLflow run; a run that raises an error of its own is FAILED
at once with its traceback (``ray_results/<grid>/<run id>/error.txt``), as Ray does for application errors.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import ray
import torch
from ray import tune
from tqdm.auto import tqdm

from harness.config.plugins import load_plugins
from harness.grid.cluster import connect_ray
from harness.grid.jobs import DenseJob, Job, RunJob, job_from_config
from harness.grid.local import close_tracked, open_tracked, threads
from harness.grid.options import Options, Outcome, context
from harness.paths import Paths
from harness.tracking import Tracker
from harness.train import Diverged

TRIAL_RETRIES = int(os.environ.get("PRUNEBENCH_TRIAL_RETRIES", "3"))  # per trial, after a worker or node is lost
ROW_KEY = "prunebench_row"  # a trial's report: one row as JSON
ERROR_KEY = "prunebench_error"  # a trial's last report when its run raised: the traceback


def trainable(config: dict) -> None:
    """One Tune trial: a dense pre-training or one grid cell."""
    config = config["job"]
    torch.set_num_threads(config["threads"])
    load_plugins(config["plugins"], "the manifest's plugins")  # this worker's registries know them too
    opts = Options(paths=Paths(Path(config["root"])),
                   data_root=Path(config["data_root"]) if config["data_root"] else None,
                   download=config["download"], device=config["device"])

    def report(row: dict) -> None:
        tune.report({ROW_KEY: json.dumps(row)})

    try:
        job_from_config(config["work"]).run(context(opts, report))
    except Diverged:
        pass  # marked on disk; the driver's callback tags the MLflow run
    except Exception:  # an error of the run itself: reported once, not retried (as Ray's tasks: only a lost worker
        # or node is retried, through FailureConfig)
        tune.report({ERROR_KEY: traceback.format_exc()})


class TrackingCallback(tune.Callback):
    """Driver side: MLflow writes, a progress bar, one line per finished trial."""

    def __init__(self, jobs: dict[str, Job], bar, experiment: str, tracker: Tracker, opts: Options, paper: str,
                 out: Outcome):
        self.jobs, self.mlflow, self.bar, self.last, self.experiment = jobs, {}, bar, {}, experiment
        self.tracker, self.opts, self.paper, self.out = tracker, opts, paper, out
        self.errors: dict[str, str] = {}  # trial id -> traceback of a run that raised

    def __getstate__(self):  # Tune pickles its state; we never restore it (resume is ours)
        return {**self.__dict__, "bar": None, "tracker": None}

    def _job(self, trial) -> Job:
        return self.jobs[trial.config["job"]["id"]]

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.mlflow:  # a retried trial keeps its MLflow run
            self.mlflow[trial.trial_id] = open_tracked(self.tracker, self._job(trial), self.paper)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.bar.write(f"retry {self._job(trial).name}: its worker was lost (attempt {trial.num_failures + 1} of "
                       f"{TRIAL_RETRIES + 1}); it resumes from its last checkpoint")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if ERROR_KEY in result:
            self.errors[trial.trial_id] = result[ERROR_KEY]
        if ROW_KEY in result:
            row = json.loads(result[ROW_KEY])
            self.tracker.log_row(self.mlflow[trial.trial_id], row)
            self.last[trial.trial_id] = row
            self.bar.update(1)

    def on_trial_complete(self, iteration, trials, trial, **info):
        job = self._job(trial)
        if trial.trial_id in self.errors:  # the run raised: FAILED at once, its traceback kept
            where = self.opts.paths.ray_results / self.experiment / job.id / "error.txt"
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_text(self.errors[trial.trial_id])
            self._failed(job, trial, self.errors[trial.trial_id], where)
            return
        close_tracked(self.tracker, self.mlflow[trial.trial_id], job, self.opts, self.out)
        self.out.ran += isinstance(job, RunJob)
        r = self.last.get(trial.trial_id, {})
        if r.get("diverged"):
            self.bar.write(f"DIVERGED {job.name} at step {int(r.get('diverged_step', -1))}")
            return
        self.bar.write(f"done  {job.name:<58} density {100 * r.get('density', float('nan')):6.2f}%  "
                       f"test acc {100 * r.get('test_acc', float('nan')):5.1f}%")

    def on_trial_error(self, iteration, trials, trial, **info):  # its worker or node lost, retries spent
        job = self._job(trial)
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        self._failed(job, trial, text, self.opts.paths.ray_results / self.experiment / job.id / "error.txt")

    def _failed(self, job: Job, trial, text: str, where: Path) -> None:
        self.tracker.close(self.mlflow[trial.trial_id], "FAILED")
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "unknown error"
        self.out.failed.append((job.name, f"{last} (traceback: {where})"))
        self.bar.write(f"FAILED {job.name}: {self.out.failed[-1][1]}")


def run_ray(dense_todo: list[DenseJob], todo: list[RunJob], opts: Options, tracker: Tracker, paper: str,
            out: Outcome, profile: str, dense_phase_over=lambda: None) -> None:
    # Tune's console (config boxes, per-trial tables) is replaced by the progress bar and the one line per finished
    # trial printed by TrackingCallback; RAY_AIR_NEW_OUTPUT=1 brings it back.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():  # address None: a local Ray. Trial output stays in Ray's logs; failures are
        # reported with their traceback file.
        connect_ray(opts.ray_address)
    avail = ray.cluster_resources()
    n_gpu, n_cpu = avail.get("GPU", 0.0), avail.get("CPU", 1.0)

    def resources(config: dict) -> dict:
        config = config["job"]
        gpu = config["gpu"] if n_gpu > 0 else 0.0  # degrade to CPU-only when there is no GPU
        return {"cpu": min(config["cpu"], n_cpu), "gpu": min(gpu, n_gpu)}

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for phase in ("dense", "runs"):
        if phase == "runs":
            dense_phase_over()
        jobs: list[Job] = list(dense_todo) if phase == "dense" else [j for j in todo if j.ready(opts.paths)]
        if not jobs:
            continue
        by_id = {j.id: j for j in jobs}
        bar = tqdm(total=sum(j.evaluations() for j in jobs), desc=f"{phase} ({len(jobs)} trials)", unit="eval",
                   dynamic_ncols=True)
        name = f"{paper}-{profile}-{phase}-{stamp}"
        callback = TrackingCallback(by_id, bar, name, tracker, opts, paper, out)
        configs = [{"id": j.id, "work": j.config(), "cpu": j.cpu, "gpu": j.gpu,
                    "threads": min(threads(j), max(1, int(n_cpu))), "root": str(opts.paths.root),
                    "data_root": str(opts.data_root) if opts.data_root else None,
                    "download": opts.download, "device": opts.device, "plugins": list(opts.plugins)} for j in jobs]
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"job": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(reuse_actors=True,
                                        trial_name_creator=lambda t: by_id[t.config["job"]["id"]].name,
                                        trial_dirname_creator=lambda t: t.config["job"]["id"]),
            run_config=tune.RunConfig(name=name, storage_path=str(opts.paths.ray_results), callbacks=[callback],
                                      verbose=0,
                                      # a lost worker or node: the trial starts again and resumes from its run
                                      # folder's last checkpoint
                                      failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)),
        )
        try:
            tuner.fit()
        finally:
            bar.close()
            for mid in callback.mlflow.values():  # stopped by Ctrl-C: not FINISHED, not FAILED
                if tracker.client.get_run(mid).info.status == "RUNNING":
                    tracker.close(mid, "KILLED")
        failed = {name for name, _ in out.failed}
        if any(not j.done(opts.paths) and j.name not in failed for j in jobs):
            return  # interrupted (Ctrl-C): start nothing more
