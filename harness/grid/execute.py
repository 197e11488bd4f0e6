"""The driver of ``prunebench run``: what is left of a grid, claimed against other drivers, on the executor asked for.

1. Skip jobs already finished (DONE on disk and FINISHED in MLflow); replay finished-but-untracked jobs into MLflow
   without training.
2. Pre-flight: every dataset the remaining runs need is present (one-line error otherwise).
3. The dense pre-trainings the remaining runs need (content-addressed, shared), then the runs, each resuming from its
   last checkpoint: one after another in this process (:mod:`.local`) or as Ray Tune trials (:mod:`.ray`).

Several drivers may share a work directory: each job is claimed (:class:`harness.locks.Claim`) while a driver works
on it, so a second driver skips what another holds and does the rest (``Outcome.held``). Only the driver writes to
MLflow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm.auto import tqdm

from harness.config import Manifest, RunSpec
from harness.data.disk import load_split
from harness.data.folders import list_split
from harness.data.sources import source
from harness.grid.cluster import check_cluster
from harness.grid.jobs import DenseJob, Job, RunJob, plan_jobs
from harness.grid.local import run_local
from harness.grid.options import Options, Outcome
from harness.locks import Claim, Claims, holder_text
from harness.paths import Paths
from harness.tracking import Tracker


def execute(manifest: Manifest, specs: list[RunSpec], opts: Options, log=print) -> Outcome:
    """Run what is left of the grid (see the module docstring)."""
    claims = Claims()
    try:
        return _execute(manifest, specs, opts, log, claims)
    finally:
        claims.release_all()


def _execute(manifest: Manifest, specs: list[RunSpec], opts: Options, log, claims: Claims) -> Outcome:
    paper = manifest.paper.key
    opts = dataclasses.replace(opts, plugins=tuple(manifest.plugins))
    if opts.executor == "ray" and opts.ray_address and not opts.ray_address.startswith("ray://"):
        check_cluster(opts.ray_address)  # before anything else: a wrong address or token is one line
    tracker = Tracker(opts.tracking_uri or opts.paths.tracking_uri,
                      None if opts.tracking_uri else opts.paths.artifact_root, lock=opts.paths.store_lock)
    tracker.experiment_id(paper)
    dense_jobs, run_jobs = plan_jobs(manifest, specs, opts.paths.report_dir(paper, manifest.label))
    out = Outcome(total=len(run_jobs))
    finished = tracker.finished_ids(paper)
    todo: list[RunJob] = []

    def claim(job: Job, wait: bool = False) -> bool:
        return claims.take(job.id, job.folder(opts.paths), wait=wait) is not None

    def replay(job: Job) -> None:  # finished on disk, lost from MLflow: tracked again, no training
        run_local(job, opts, tracker, paper, out)
        claims.release(job.id)

    for job in run_jobs:
        if job.done(opts.paths):
            if job.id not in finished and claim(job):  # (unless another driver is closing it right now)
                replay(job)
            out.skipped += 1
        elif claim(job):
            todo.append(job)
        else:
            out.held.append((job.name, holder_text(Claim(job.folder(opts.paths)).holder())))
    for job in dense_jobs:  # trained (e.g. inside an interrupted run) but never tracked
        if job.done(opts.paths) and job.id not in finished and claim(job):
            replay(job)
    needed = {j.needs for j in todo if j.needs is not None}
    dense_todo: list[DenseJob] = []
    for job in sorted((j for j in dense_jobs if j.id in needed and not j.done(opts.paths)), key=lambda j: j.id):
        if not claim(job):  # another driver is pre-training it: wait for it (ordered: no deadlock)
            log(f"waiting for the dense pre-training {job.name}, held by "
                f"{holder_text(Claim(job.folder(opts.paths)).holder())}")
            claim(job, wait=True)
        if job.done(opts.paths):  # pre-trained meanwhile by the driver we waited for
            if job.id not in finished:
                run_local(job, opts, tracker, paper, out)  # tracked in this paper too: a replay
            claims.release(job.id)
        else:
            dense_todo.append(job)
    if not todo:
        if not out.held:  # (all held by another driver: the caller says so)
            log(f"all {out.total} runs of {paper}/{manifest.label} are finished; nothing to do")
        return out
    _preflight(todo, opts)
    held = f", {len(out.held)} held by another driver ({out.held[0][1]})" if out.held else ""
    log(f"{paper}/{manifest.label}: {len(todo)} of {out.total} runs to do "
        f"({out.skipped} finished{held}), {len(dense_todo)} dense pre-trainings")

    def dense_phase_over() -> None:
        for j in dense_todo:
            claims.release(j.id)

    if opts.executor == "local":
        for job in dense_todo:
            run_local(job, opts, tracker, paper, out)
        dense_phase_over()
        for job in tqdm(ready(todo, opts.paths), desc="runs (local)", unit="run", dynamic_ncols=True):
            out.ran += run_local(job, opts, tracker, paper, out)
    else:
        from harness.grid.ray import run_ray  # Ray is imported only when the Ray executor is asked for

        run_ray(dense_todo, todo, opts, tracker, paper, out, manifest.label, dense_phase_over)
    out.dense_trained = sum(j.done(opts.paths) for j in dense_todo)
    failed = {name for name, _ in out.failed}
    out.unfinished = [j.name for j in todo if not j.done(opts.paths) and j.name not in failed]
    return out


def ready(runs: list[RunJob], paths: Paths) -> list[RunJob]:
    """The runs whose dense model exists (a failed pre-training is not retried once per run)."""
    return [j for j in runs if j.ready(paths)]


def _preflight(jobs: list[RunJob], opts: Options) -> None:
    """Fail fast, in the driver, when a dataset is missing (DataError is one line)."""
    root = Path(opts.data_root or opts.paths.data)
    for name in sorted({j.spec.dataset.source for j in jobs}):
        src = source(name)
        if src.holding == "stream":  # the folders are listed (no image is read)
            for train in (True, False):
                list_split(src, root, train)
        else:
            load_split(name, root, train=False, download=opts.download)
