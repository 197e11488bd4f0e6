"""The local executor: jobs one after another in this process (``--executor local``; also how the driver replays a
finished-but-untracked job into MLflow). Both executors give a job the same number of CPU threads, so they compute
the same numbers."""

from __future__ import annotations

import json
import os

import torch

from harness.grid.jobs import Job
from harness.grid.options import Options, Outcome, context
from harness.tracking import Tracker
from harness.train import Diverged


def threads(job: Job) -> int:
    """CPU threads of a job: its CPU share."""
    return max(1, min(int(job.cpu), os.cpu_count() or 1))


def open_tracked(tracker: Tracker, job: Job, paper: str) -> str:
    """The job's MLflow run (reused when it exists), under its group's parent run."""
    key, name, description = job.group
    return tracker.open(paper, job.spec, job.tags, job.display or job.name,
                        parent=tracker.parent(paper, key, name, description) if key else None)


def close_tracked(tracker: Tracker, mid: str, job: Job, opts: Options, out: Outcome) -> None:
    """A job that ended normally: artifacts, dataset input, description, then FINISHED, or FAILED with the diverged
    tags."""
    tracker.log_artifacts(mid, job.artifacts(opts.paths))
    data = job.folder(opts.paths) / "data.json"
    if data.exists():
        tracker.log_dataset(mid, job.dataset_key, json.loads(data.read_text()))
    tracker.describe(mid, "\n\n".join(t for t in (job.about, job.outcome(opts.paths)) if t))
    info = job.diverged(opts.paths)
    if info is None:
        tracker.close(mid, "FINISHED")
        return
    tracker.mark_diverged(mid, info["step"])
    tracker.close(mid, "FAILED")
    out.diverged.append((job.name, info["step"]))


def run_local(job: Job, opts: Options, tracker: Tracker, paper: str, out: Outcome) -> bool:
    """Run (or, when finished on disk, just replay into MLflow) one job in this process."""
    mid = open_tracked(tracker, job, paper)
    ctx = context(opts, report=lambda row: tracker.log_row(mid, row))
    before = torch.get_num_threads()
    torch.set_num_threads(threads(job))
    try:
        job.run(ctx)
    except KeyboardInterrupt:
        tracker.close(mid, "KILLED")
        raise
    except Diverged:
        pass  # a result, not an error: close_tracked marks it (the DIVERGED file says where)
    except Exception as e:  # recorded, reported at the end; the grid goes on
        tracker.close(mid, "FAILED")
        out.failed.append((job.name, f"{type(e).__name__}: {e}"))
        return False
    finally:
        torch.set_num_threads(before)
    close_tracked(tracker, mid, job, opts, out)
    return True
