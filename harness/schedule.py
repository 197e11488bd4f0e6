"""Orchestration: Ray Tune runs every grid cell; MLflow is written by the driver only.

Flow of one ``prunebench run``:

1. Skip cells already finished (run directory marked DONE and MLflow run FINISHED); replay
   finished-but-untracked cells into MLflow without training.
2. Pre-flight: every dataset the remaining cells need is present (one-line error otherwise).
3. Phase 1, one Tune trial per distinct dense pre-training (content-addressed: shared by every
   method, sparsity and experiment that starts from it).
4. Phase 2, one Tune trial per remaining cell, resuming from its last finished round.

Trials report one row per evaluation through ``tune.report``; a driver-side callback logs each
row to MLflow in one batched call, so parallel trials never write the SQLite file. A run that
diverged (non-finite loss or weights) ends as FAILED with a ``diverged`` tag; the grid goes on.
``executor="local"`` runs the same stages in-process, one after another (debugging, no Ray).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from harness import experiment
from harness.data import load_split
from harness.errors import ClusterError
from harness.locks import Claim, Claims, holder_text
from harness.config import DenseSpec, EvalConfig, Manifest, RunSpec, build, dense_from_dict, resources_for
from harness.paths import Paths
from harness.train import Diverged
from harness.tracking import Tracker, display_name, run_name, run_tags


@dataclass
class Options:
    paths: Paths
    data_root: Path | None = None
    download: bool = False
    executor: str = "ray"  # "ray" | "local"
    ray_address: str | None = None
    tracking_uri: str | None = None
    device: str | None = None


@dataclass
class Outcome:
    total: int
    skipped: int = 0
    ran: int = 0
    dense_trained: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run name, error)
    diverged: list[tuple[str, int]] = field(default_factory=list)  # (run name, step)
    unfinished: list[str] = field(default_factory=list)  # interrupted (Ctrl-C) before finishing
    held: list[tuple[str, str]] = field(default_factory=list)  # (run name, holder): another driver's


@dataclass(frozen=True)
class _Job:
    kind: str  # "dense" | "run"
    spec: RunSpec | DenseSpec
    name: str
    tags: dict
    cpu: float
    gpu: float
    eval: EvalConfig | None = None  # dense jobs: how the dense model is evaluated for its MLflow run
    display: str = ""  # the short name the MLflow UI shows
    dataset_key: str = ""
    group: tuple[str, str, str] = ("", "", "")  # parent run: (key, name, description)
    about: str = ""  # the first half of the run's description (what it is)

    @property
    def id(self) -> str:
        return self.spec.id


def _done(opts: Options, job: _Job, paper: str) -> bool:
    return experiment.finished(opts.paths, job.spec)


def _context(opts: Options, report=lambda row: None) -> experiment.Context:
    return experiment.Context(paths=opts.paths, data_root=opts.data_root, download=opts.download,
                              device=opts.device, report=report)


def _artifacts(opts: Options, job: _Job, paper: str) -> list[Path]:
    if job.kind == "dense":
        d = opts.paths.dense_dir(job.id)
        return [d / "spec.json", d / "train.json"]
    return experiment.artifacts(opts.paths, job.spec)


def _open(tracker: Tracker, job: _Job, paper: str) -> str:
    key, name, description = job.group
    return tracker.open(paper, job.spec, job.tags, job.display or job.name,
                        parent=tracker.parent(paper, key, name, description) if key else None)


def _outcome_text(opts: Options, job: _Job, info: dict | None) -> str:
    """The second half of a run's description: what it reached."""
    if info is not None:
        return f"**Diverged** at step {info['step']} ({info['what']} became non-finite): no result."
    if job.kind == "dense":
        return "Dense pre-training, shared by every run that starts from it (evaluated in each run's round 0)."
    rows = experiment.read_rows(opts.paths, job.spec)
    final = rows[-1] if rows else {}
    if "test_acc" not in final:
        return ""
    return (f"Reached: density {100 * final['density']:.3g}% of the prunable weights "
            f"({100 * final.get('density_all', float('nan')):.3g}% of all parameters), "
            f"test accuracy {100 * final['test_acc']:.2f}% (final).")


def _close(tracker: Tracker, mid: str, job: _Job, opts: Options, paper: str, out: Outcome) -> None:
    """A job that ended normally: artifacts, dataset input, description, then FINISHED, or FAILED
    with the diverged tags."""
    tracker.log_artifacts(mid, _artifacts(opts, job, paper))
    data = experiment.stage_dir(opts.paths, job.spec) / "data.json"
    if data.exists():
        tracker.log_dataset(mid, job.dataset_key, json.loads(data.read_text()))
    info = experiment.diverged_info(opts.paths, job.spec)
    tracker.describe(mid, "\n\n".join(t for t in (job.about, _outcome_text(opts, job, info)) if t))
    if info is None:
        tracker.close(mid, "FINISHED")
        return
    tracker.mark_diverged(mid, info["step"])
    tracker.close(mid, "FAILED")
    out.diverged.append((job.name, info["step"]))


def _about(manifest: Manifest, s: RunSpec, report: Path) -> str:
    from harness.config.expand import method_parts

    e = manifest.experiment(s.experiment)
    target = f", target sparsity {100 * s.target_sparsity:g}%" if s.target_sparsity is not None else ""
    return (f"**{manifest.paper.title}** ({manifest.paper.venue} {manifest.paper.year}), profile `{manifest.profile}`: "
            f"{e.title}.\n\nMethod `{s.method}` ({method_parts(manifest, s.method)[0].description}) on model "
            f"`{s.model_key}` (`{s.model.arch}`, width {s.model.width:g}), dataset `{s.dataset_key}`, seed {s.seed}"
            f"{target}. Report: `{report / 'README.md'}` (also the artifacts of the run `report · {manifest.profile}`).")


def plan_jobs(manifest: Manifest, specs: list[RunSpec], report: Path | None = None) -> tuple[list[_Job], list[_Job]]:
    """The dense jobs (deduplicated by content) and the run jobs of ``specs``."""
    report = report or Path("reports") / manifest.paper.key / manifest.profile
    dense: dict[str, _Job] = {}
    runs: list[_Job] = []
    for s in specs:
        res = resources_for(manifest, s)
        if s.dense is not None and s.dense.id not in dense:
            group = (f"{manifest.profile}/dense", f"dense pre-trainings · {manifest.profile}",
                     "The dense models the pruning runs start from (content-addressed, shared).")
            dense[s.dense.id] = _Job("dense", s.dense, run_name(s.dense, s.model_key, s.dataset_key),
                                     run_tags(s.dense, manifest, s.model_key, s.dataset_key), res.cpu, res.gpu,
                                     eval=s.eval, display=display_name(s.dense, s.model_key, s.dataset_key),
                                     dataset_key=s.dataset_key, group=group,
                                     about=f"Dense pre-training of `{s.model_key}` on `{s.dataset_key}`, seed {s.seed}.")
        e = manifest.experiment(s.experiment)
        group = (f"{manifest.profile}/{s.experiment}", f"{s.experiment} · {manifest.profile}", e.title)
        runs.append(_Job("run", s, run_name(s), run_tags(s, manifest), res.cpu, res.gpu, display=display_name(s),
                         dataset_key=s.dataset_key, group=group, about=_about(manifest, s, report)))
    return list(dense.values()), runs


def execute(manifest: Manifest, specs: list[RunSpec], opts: Options, log=print) -> Outcome:
    """Run what is left of the grid. Several drivers may share the work directory: each run (and
    dense pre-training) is claimed (:class:`harness.locks.Claim`) while a driver works on it, so a
    second driver skips what another one holds and does the rest (``Outcome.held``)."""
    claims = Claims()
    try:
        return _execute(manifest, specs, opts, log, claims)
    finally:
        claims.release_all()


def _execute(manifest: Manifest, specs: list[RunSpec], opts: Options, log, claims: Claims) -> Outcome:
    paper = manifest.paper.key
    if opts.executor == "ray" and opts.ray_address and not opts.ray_address.startswith("ray://"):
        check_cluster(opts.ray_address)  # before anything else: a wrong address or token is one line
    tracker = Tracker(opts.tracking_uri or opts.paths.tracking_uri,
                      None if opts.tracking_uri else opts.paths.artifact_root, lock=opts.paths.store_lock)
    tracker.experiment_id(paper)
    dense_jobs, run_jobs = plan_jobs(manifest, specs, opts.paths.report_dir(paper, manifest.profile))
    out = Outcome(total=len(run_jobs))
    finished = tracker.finished_ids(paper)
    todo: list[_Job] = []

    def claim(job: _Job, wait: bool = False) -> bool:
        return claims.take(job.id, experiment.stage_dir(opts.paths, job.spec), wait=wait) is not None

    for job in run_jobs:
        if _done(opts, job, paper):
            # finished on disk, lost from MLflow: replay, no training (unless another driver is
            # closing it right now)
            if job.id not in finished and claim(job):
                _run_local(job, opts, tracker, paper, out)
                claims.release(job.id)
            out.skipped += 1
        elif claim(job):
            todo.append(job)
        else:
            out.held.append((job.name, holder_text(Claim(experiment.stage_dir(opts.paths, job.spec)).holder())))
    for job in dense_jobs:  # trained (e.g. inside an interrupted run) but never tracked: replay
        if _done(opts, job, paper) and job.id not in finished and claim(job):
            _run_local(job, opts, tracker, paper, out)
            claims.release(job.id)
    needed = {j.spec.dense.id for j in todo if j.spec.dense is not None}
    dense_todo = []
    for job in sorted((j for j in dense_jobs if j.id in needed and not _done(opts, j, paper)), key=lambda j: j.id):
        if not claim(job):  # another driver is pre-training it: wait for it (ordered: no deadlock)
            who = holder_text(Claim(experiment.stage_dir(opts.paths, job.spec)).holder())
            log(f"waiting for the dense pre-training {job.name}, held by {who}")
            claim(job, wait=True)
        if _done(opts, job, paper):  # pre-trained meanwhile by the driver we waited for
            if job.id not in finished:
                _run_local(job, opts, tracker, paper, out)  # tracked in this paper too: a replay
            claims.release(job.id)
        else:
            dense_todo.append(job)
    if not todo:
        if not out.held:  # (all held by another driver: the caller says so)
            log(f"all {out.total} runs of {paper}/{manifest.profile} are finished; nothing to do")
        return out
    _preflight(todo, opts)
    held = f", {len(out.held)} held by another driver ({out.held[0][1]})" if out.held else ""
    log(f"{paper}/{manifest.profile}: {len(todo)} of {out.total} runs to do "
        f"({out.skipped} finished{held}), {len(dense_todo)} dense pre-trainings")

    def dense_phase_over() -> None:
        for j in dense_todo:
            claims.release(j.id)

    if opts.executor == "local":
        for job in dense_todo:
            _run_local(job, opts, tracker, paper, out)
        dense_phase_over()
        for job in tqdm(_ready(todo, opts), desc="runs (local)", unit="run", dynamic_ncols=True):
            out.ran += _run_local(job, opts, tracker, paper, out)
    else:
        _run_ray(dense_todo, todo, opts, tracker, paper, out, manifest.profile, dense_phase_over)
    out.dense_trained = sum(_done(opts, j, paper) for j in dense_todo)
    failed = {name for name, _ in out.failed}
    out.unfinished = [j.name for j in todo if not _done(opts, j, paper) and j.name not in failed]
    return out


def _ready(runs: list[_Job], opts: Options) -> list[_Job]:
    """The runs whose dense model exists (a failed pre-training is not retried once per run)."""
    return [j for j in runs if j.spec.dense is None or experiment.finished(opts.paths, j.spec.dense)]


def _preflight(jobs: list[_Job], opts: Options) -> None:
    """Fail fast, in the driver, when a dataset is missing (DataError is one line)."""
    root = Path(opts.data_root or opts.paths.data)
    for source in sorted({j.spec.dataset.source for j in jobs}):
        load_split(source, root, train=False, download=opts.download)


def _threads(job: _Job) -> int:
    """CPU threads of a trial: its CPU share (so both executors compute the same numbers)."""
    return max(1, min(int(job.cpu), os.cpu_count() or 1))


def _run_local(job: _Job, opts: Options, tracker: Tracker, paper: str, out: Outcome) -> bool:
    """Run (or, when finished on disk, just replay into MLflow) one job in this process."""
    import torch

    mid = _open(tracker, job, paper)
    ctx = _context(opts, report=lambda row: tracker.log_row(mid, row))
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(job))
    try:
        if job.kind == "dense":
            ctx.report(experiment.run_dense(job.spec, ctx, job.eval))
        else:
            experiment.run(job.spec, ctx)
    except KeyboardInterrupt:
        tracker.close(mid, "KILLED")
        raise
    except Diverged:
        pass  # a result, not an error: _close marks it (the DIVERGED file says where)
    except Exception as e:  # recorded, reported at the end; the grid goes on
        tracker.close(mid, "FAILED")
        out.failed.append((job.name, f"{type(e).__name__}: {e}"))
        return False
    finally:
        torch.set_num_threads(threads)
    _close(tracker, mid, job, opts, paper, out)
    return True


# ----------------------------------------------------------------------------- Ray


def _evaluations(spec: RunSpec) -> int:
    """Rows a finished run reports (its procedure plans them)."""
    return len(spec.proc.planned_rows(spec))


TRIAL_RETRIES = int(os.environ.get("PRUNEBENCH_TRIAL_RETRIES", "3"))  # per trial, after a worker or node is lost
ROW_KEY = "prunebench_row"  # a trial's report: one row as JSON
ERROR_KEY = "prunebench_error"  # a trial's last report when its run raised: the traceback


def _trainable(config: dict) -> None:
    """One Tune trial: a dense pre-training or one grid cell."""
    import torch
    from ray import tune

    config = config["job"]
    torch.set_num_threads(config["threads"])
    opts = Options(paths=Paths(Path(config["root"])),
                   data_root=Path(config["data_root"]) if config["data_root"] else None,
                   download=config["download"], device=config["device"])

    def report(row: dict) -> None:
        tune.report({ROW_KEY: json.dumps(row)})

    ctx = _context(opts, report)
    try:
        if config["kind"] == "dense":
            try:
                report(experiment.run_dense(dense_from_dict(config["spec"]), ctx,
                                            build(EvalConfig, config["eval"], "<spec>", "eval")))
            except Diverged:
                pass  # marked on disk; the driver's callback tags the MLflow run
        else:
            experiment.run(RunSpec.from_dict(config["spec"]), ctx)
    except Exception:  # an error of the run itself: reported once, not retried (as Ray's tasks: only a
        # lost worker or node is retried, through FailureConfig)
        tune.report({ERROR_KEY: traceback.format_exc()})


TOKEN_HELP = ("copy the cluster's token (`ray get-auth-token` on the head node prints it) to ~/.ray/auth_token on "
              "this machine, or point RAY_AUTH_TOKEN_PATH at it, or set RAY_AUTH_TOKEN; and export RAY_AUTH_MODE=token")


def ray_token_available() -> bool:
    """A Ray token where Ray documents it: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path) if path else Path.home() / ".ray" / "auth_token"
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def _enable_ray_token_auth() -> None:
    """RAY_AUTH_MODE=token when it is unset and a token is available (as ``ray start`` does when it
    finds one), so a driver reaches a token-authenticated cluster without further settings."""
    if os.environ.get("RAY_AUTH_MODE") is not None or not ray_token_available():
        return
    try:  # Ray's own switch (also refreshes its cached config)
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()
    except ImportError:
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the block (native code's log lines included)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_cluster(address: str, timeout: float = 5.0) -> str:
    """The cluster's GCS address, once it answers and accepts this driver's token; else ClusterError."""
    import socket

    from ray._private import services

    _enable_ray_token_auth()
    try:
        gcs = services.canonicalize_bootstrap_address(address)
    except Exception as e:  # "auto" with no cluster started here, a malformed address
        raise ClusterError(f"no Ray cluster at --ray-address {address} ({str(e).splitlines()[0] if str(e) else e!r}); "
                           f"start one with `ray start --head`, or pass its head's host:port") from None
    if gcs is None:
        raise ClusterError(f"no Ray cluster found for --ray-address {address}: start one with `ray start --head` "
                           f"on this machine, or pass its head's host:port")
    host, port = gcs.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at {gcs} ({e.strerror or e}): start it with "
                           f"`ray start --head --port {port}`, or fix --ray-address") from None
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        with _quiet_stderr():  # Ray's C++ client logs each refused attempt itself
            GcsClient(address=gcs)
    except AuthenticationError:
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        what = ("refuses this driver's token" if mode == "token" and ray_token_available()
                else f"requires token authentication (RAY_AUTH_MODE here: {mode})" if mode != "token"
                else "requires token authentication and this driver has no token")
        raise ClusterError(f"the Ray cluster at {gcs} {what}: {TOKEN_HELP}") from None
    except Exception as e:
        raise ClusterError(f"the Ray cluster at {gcs} does not answer ({str(e).splitlines()[0][:200]}); "
                           f"check it with `ray status --address {gcs}`") from None
    return gcs


def connect_ray(address: str | None) -> None:
    """``ray.init``: a local Ray (address None), or an existing cluster, checked first (one-line errors)."""
    import ray

    if address is not None and not address.startswith("ray://"):
        address = check_cluster(address)
    # "local": a new Ray of this driver's own, never a cluster someone else started on this machine
    # (ray.init() with no address joins the latest one it finds); RAY_ADDRESS still overrides it.
    ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)


def _run_ray(dense_todo: list[_Job], todo: list[_Job], opts: Options, tracker: Tracker, paper: str,
             out: Outcome, profile: str, dense_phase_over=lambda: None) -> None:
    import ray
    from ray import tune

    # Tune's console (config boxes, per-trial tables) is replaced by the progress bar and the
    # one line per finished trial printed by TrackingCallback; RAY_AIR_NEW_OUTPUT=1 brings it back.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():  # address None: a local Ray. Trial output stays in Ray's logs;
        # failures are reported with their traceback file.
        connect_ray(opts.ray_address)
    avail = ray.cluster_resources()
    n_gpu, n_cpu = avail.get("GPU", 0.0), avail.get("CPU", 1.0)

    class TrackingCallback(tune.Callback):
        """Driver side: MLflow writes, a progress bar, one line per finished trial."""

        def __init__(self, jobs: dict[str, _Job], bar, experiment: str):
            self.jobs, self.mlflow, self.bar, self.last, self.experiment = jobs, {}, bar, {}, experiment
            self.errors: dict[str, str] = {}  # trial id -> traceback of a run that raised

        def __getstate__(self):  # Tune pickles its state; we never restore it (resume is ours)
            return {**self.__dict__, "bar": None}

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id not in self.mlflow:  # a retried trial keeps its MLflow run
                job = self.jobs[trial.config["job"]["id"]]
                self.mlflow[trial.trial_id] = _open(tracker, job, paper)

        def on_trial_recover(self, iteration, trials, trial, **info):
            job = self.jobs[trial.config["job"]["id"]]
            self.bar.write(f"retry {job.name}: its worker was lost (attempt {trial.num_failures + 1} of "
                           f"{TRIAL_RETRIES + 1}); it resumes from its last checkpoint")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if ERROR_KEY in result:
                self.errors[trial.trial_id] = result[ERROR_KEY]
            if ROW_KEY in result:
                row = json.loads(result[ROW_KEY])
                tracker.log_row(self.mlflow[trial.trial_id], row)
                self.last[trial.trial_id] = row
                self.bar.update(1)

        def on_trial_complete(self, iteration, trials, trial, **info):
            job = self.jobs[trial.config["job"]["id"]]
            if trial.trial_id in self.errors:  # the run raised: FAILED at once, its traceback kept
                where = opts.paths.ray_results / self.experiment / job.id / "error.txt"
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_text(self.errors[trial.trial_id])
                self._failed(job, trial, self.errors[trial.trial_id], where)
                return
            _close(tracker, self.mlflow[trial.trial_id], job, opts, paper, out)
            out.ran += job.kind == "run"
            r = self.last.get(trial.trial_id, {})
            if r.get("diverged"):
                self.bar.write(f"DIVERGED {job.name} at step {int(r.get('diverged_step', -1))}")
                return
            self.bar.write(f"done  {job.name:<58} density {100 * r.get('density', float('nan')):6.2f}%  "
                           f"test acc {100 * r.get('test_acc', float('nan')):5.1f}%")

        def on_trial_error(self, iteration, trials, trial, **info):  # its worker or node lost, retries spent
            job = self.jobs[trial.config["job"]["id"]]
            text = ""
            if trial.error_file and Path(trial.error_file).is_file():
                text = Path(trial.error_file).read_text()
            self._failed(job, trial, text, opts.paths.ray_results / self.experiment / job.id / "error.txt")

        def _failed(self, job: _Job, trial, text: str, where: Path) -> None:
            tracker.close(self.mlflow[trial.trial_id], "FAILED")
            lines = [l for l in text.splitlines() if l.strip()]
            last = lines[-1].strip() if lines else "unknown error"
            out.failed.append((job.name, f"{last} (traceback: {where})"))
            self.bar.write(f"FAILED {job.name}: {out.failed[-1][1]}")

    def resources(config: dict) -> dict:
        config = config["job"]
        gpu = config["gpu"] if n_gpu > 0 else 0.0  # degrade to CPU-only when there is no GPU
        return {"cpu": min(config["cpu"], n_cpu), "gpu": min(gpu, n_gpu)}

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for phase in ("dense", "runs"):
        if phase == "runs":
            dense_phase_over()
        jobs = dense_todo if phase == "dense" else _ready(todo, opts)
        if not jobs:
            continue
        by_id = {j.id: j for j in jobs}
        evaluations = sum(1 if j.kind == "dense" else _evaluations(j.spec) for j in jobs)
        bar = tqdm(total=evaluations, desc=f"{phase} ({len(jobs)} trials)", unit="eval", dynamic_ncols=True)
        name = f"{paper}-{profile}-{phase}-{stamp}"
        callback = TrackingCallback(by_id, bar, name)
        configs = [{"id": j.id, "kind": j.kind, "spec": dataclasses.asdict(j.spec), "cpu": j.cpu,
                    "eval": dataclasses.asdict(j.eval) if j.eval else None,
                    "gpu": j.gpu, "threads": min(_threads(j), max(1, int(n_cpu))), "root": str(opts.paths.root),
                    "data_root": str(opts.data_root) if opts.data_root else None,
                    "download": opts.download, "device": opts.device} for j in jobs]
        tuner = tune.Tuner(
            tune.with_resources(_trainable, resources),
            param_space={"job": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(reuse_actors=True,
                                        trial_name_creator=lambda t: by_id[t.config["job"]["id"]].name,
                                        trial_dirname_creator=lambda t: t.config["job"]["id"]),
            run_config=tune.RunConfig(name=name,
                                      storage_path=str(opts.paths.ray_results),
                                      callbacks=[callback], verbose=0,
                                      # a lost worker or node: the trial starts again and resumes
                                      # from its run folder's last checkpoint
                                      failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)),
        )
        try:
            tuner.fit()
        finally:
            bar.close()
            for trial_id, mid in callback.mlflow.items():  # stopped by Ctrl-C: not FINISHED, not FAILED
                if tracker.client.get_run(mid).info.status == "RUNNING":
                    tracker.close(mid, "KILLED")
        failed = {name for name, _ in out.failed}
        if any(not _done(opts, j, paper) and j.name not in failed for j in jobs):
            return  # interrupted (Ctrl-C): start nothing more
