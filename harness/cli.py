"""``prunebench validate | plan | run | report | leaderboard | plugins | ui`` (also ``python -m harness``)."""

from __future__ import annotations

import argparse
import faulthandler
import functools
import os
import signal
import sys
from pathlib import Path

from harness.config import ManifestError, RunSpec
from harness.config.load import load, load_all
from harness.data import DataError
from harness.grid.expand import expand
from harness.pruning.methods import dense_spec
from harness.errors import ClusterError
from harness.paths import Paths


def _manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="paper manifest, e.g. paper_configs/lamp.yaml")
    p.add_argument("--profile", default="full", help="profile of the manifest (default: full; e.g. ci)")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=None,
                   help="where runs/, mlflow.db, mlartifacts/ and data/ live (default: current directory)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<workdir>/mlflow.db)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="prunebench", description="Reproduce pruning papers from their manifests.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a manifest (every profile, or --profile) and exit")
    p.add_argument("manifest", help="paper manifest, e.g. paper_configs/lamp.yaml")
    p.add_argument("--profile", default=None, help="check only this profile (default: full and every profile)")
    p = sub.add_parser("plan", help="list the runs a manifest expands to, without running anything")
    _manifest_args(p)
    p.add_argument("--ids", action="store_true", help="list every cell: run id, name, its training images and PFLOP")
    p.add_argument("--device-name", default=None,
                   help="estimate hours for this device of benchmarks/figures.json (default: this machine's GPU, "
                        "or 'CPU <model> x<threads> threads')")
    p.add_argument("--figures", default=None, help="benchmark figures file (default: benchmarks/figures.json)")
    p.add_argument("--tflops", type=float, default=None,
                   help="also give device-hours at this assumed sustained training throughput in TFLOP/s (an "
                        "estimate from the FLOP count, e.g. 100 for a well-fed H100 in bf16; not a measured figure)")
    p = sub.add_parser("run", help="run every grid cell (resumes), then write the report")
    _manifest_args(p)
    _store_args(p)
    p.add_argument("--data-root", default=None, help="dataset root (default: <workdir>/data)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (e.g. 'auto'); default: local Ray")
    p.add_argument("--executor", choices=["ray", "local"], default="ray",
                   help="'local' runs the grid in this process, one run after another (no Ray)")
    p.add_argument("--device", default=None, help="torch device for trials (default: cuda if available, else cpu)")
    p.add_argument("--no-report", action="store_true", help="skip writing the report afterwards")
    p.add_argument("--smoke", action="store_true",
                   help="instead: run every distinct cell for the first and last steps of each stage, at full model "
                        "size, on synthetic files in each dataset's format, writing nothing to the store")
    p = sub.add_parser("report", help="turn the tracked runs into the paper's tables, claims and plots")
    _manifest_args(p)
    _store_args(p)
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/reports/<paper>/<profile>)")
    p.add_argument("--check-against", default=None, metavar="DIR",
                   help="regression check: compare with the results.csv in DIR (exit 1 on a difference)")
    p.add_argument("--acc-tol", type=float, default=5.0, help="regression tolerance in accuracy points (default 5)")
    p = sub.add_parser("leaderboard", help="run one method under every paper's protocol (overlay manifests that add "
                                           "it) and rank it among each paper's own methods")
    p.add_argument("overlays", nargs="+", help="overlay manifests, one per paper (each `extends:` a paper's)")
    p.add_argument("--method", action="append", required=True,
                   help="the method's key in the overlays (repeat for several names)")
    p.add_argument("--profile", default="ci", help="profile of every paper's manifest (default: ci)")
    _store_args(p)
    p.add_argument("--data-root", default=None, help="dataset root (default: <workdir>/data)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--no-run", action="store_true", help="rank what is tracked already; train nothing")
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/reports/leaderboard/<method>-<profile>)")
    p = sub.add_parser("plugins", help="list the installed plugins and what is registered")
    p = sub.add_parser("ui", help="start the MLflow UI on the store")
    _store_args(p)
    p.add_argument("--port", default="5000")
    return ap


def _stacks_on_usr1() -> None:
    """`kill -USR1 <pid>`: every thread's stack on stderr, and the command goes on."""
    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    except (AttributeError, OSError, ValueError):  # stderr is no file (the CLI called in-process, output captured)
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stacks_on_usr1()
    try:
        return {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "report": cmd_report,
                "leaderboard": cmd_leaderboard, "plugins": cmd_plugins, "ui": cmd_ui}[args.command](args)
    except (ManifestError, DataError, ClusterError) as e:
        print(f"prunebench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunebench: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def cmd_validate(args) -> int:
    for m in load_all(args.manifest, args.profile):
        specs = expand(m)
        print(f"{args.manifest} [{m.profile}]: valid — {len(m.experiments)} experiments, {len(specs)} runs, "
              f"{len(m.claims)} claims, {len(m.deviations)} deviations")
    return 0


@functools.lru_cache(maxsize=None)
def _model_cost(arch: str, width: float, num_classes: int, size: int = 32) -> tuple[int, int]:
    """(parameters, forward MACs per image) of a model: recorded in the catalog, else measured (which loads torch:
    record it with scripts/model_costs.py)."""
    from harness.models import model_cost

    cost = model_cost(arch, width, num_classes, size)
    if cost is None:
        from harness.models.build import measured_cost  # a size the catalog has not recorded: build it

        cost = measured_cost(arch, width, num_classes, size)
    return cost


def cmd_plan(args) -> int:
    from harness import plan
    from harness.figures import FIGURES, device_name, load_figures
    from harness.grid.describe import run_name

    m = load(args.manifest, args.profile)
    specs = expand(m)
    rows = plan.rows(specs, _model_cost)
    print(f"{m.paper.title} ({m.paper.venue} {m.paper.year}) — profile {m.profile}")
    header = f"{'experiment':<16} {'model':<10} {'params':>11} {'dataset':<16} {'seeds':>5} " \
             f"{'runs':>5} {'dense':>5} {'train images':>14} {'PFLOP':>9}  methods"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.experiment:<16} {r.model:<10} {r.params:>11,} {r.dataset:<16} {r.seeds:>5} {r.runs:>5} "
              f"{r.dense:>5} {r.images:>14,} {r.flop / 1e15:>9.2f}  {', '.join(r.methods)}")
    print("-" * len(header))
    print(f"{'total':<16} {'':<10} {'':>11} {'':<16} {'':>5} {sum(r.runs for r in rows):>5} "
          f"{sum(r.dense for r in rows):>5} {sum(r.images for r in rows):>14,} {sum(r.flop for r in rows) / 1e15:>9.2f}")
    for methods, line in plan.summaries(specs):
        print(f"  {', '.join(methods)}: {line}")
    print("compute: training FLOPs ≈ 6 × forward MACs × training images (dense kernels with masks), mask "
          "selection passes included; evaluation passes excluded")
    if args.tflops:
        if args.tflops <= 0:
            raise ManifestError(f"--tflops: expected a positive throughput, got {args.tflops}")
        print(f"device-hours at an assumed {args.tflops:g} TFLOP/s sustained (FLOP count / throughput; an estimate, "
              f"not a measurement):")
        for r in rows:
            print(f"  {r.experiment:<28} {r.model:<12} {r.dataset:<20} {r.flop / (args.tflops * 1e12) / 3600:>12,.1f} h")
        print(f"  {'total':<62} {sum(r.flop for r in rows) / (args.tflops * 1e12) / 3600:>12,.1f} h")
    path = Path(args.figures) if args.figures else FIGURES
    h = plan.hours(m, rows, load_figures(path), args.device_name or device_name(), os.cpu_count() or 1)
    _print_hours(h, path)
    if args.ids:  # every cell with its own compute (its shared dense pre-training listed, not counted)
        for s in specs:
            own, flop = plan.cell_cost(s, _model_cost)
            dense = f"  dense {dense_spec(s).id}" if dense_spec(s) else ""
            print(f"{s.id}  {run_name(s):<72} {own:>13,} images {flop / 1e15:>9.3f} PFLOP{dense}")
    return 0


def _print_hours(h, path: Path) -> None:
    if h.known_devices or not (h.lines or h.missing):
        print(f"hours: no benchmark figure for device '{h.device}' in {path} (figures exist for: "
              f"{'; '.join(h.known_devices) or 'none'}); run `make bench` here or pass --device-name")
        return
    print(f"hours on {h.device} (training steps at the latest measured images/s of {path.name}, one trial at a "
          f"time{' on its resources.cpu threads' if h.cpu else ''}; 'packed': the manifest's resources sharing the "
          f"device, where measured; evaluation excluded):")
    for x in h.lines:
        r, fig = x.row, x.figure
        extra = (f"; packed {x.trials} per device: {x.packed['images_per_s']:,.0f} img/s -> {x.packed_hours:,.2f} h"
                 if x.packed else "")
        threads = f", {' '.join(fig['device'].split()[-2:])}" if h.cpu else ""
        print(f"  {r.experiment:<16} {r.model:<10} {r.dataset:<16} {x.hours:>10,.2f} h at {fig['images_per_s']:,.0f} "
              f"img/s ({fig['benchmark']}, batch {fig['batch']}, {fig['precision']}{threads}, {fig['date']}){extra}")
    if h.missing:
        print(f"  no figure on this device for: {', '.join(h.missing)} (not in the total)")
    print(f"  total: {h.total:,.2f} h one trial at a time" +
          (f", {h.total_packed:,.2f} h packed" if h.total_packed != h.total else "") +
          (" (rows with a figure only)" if h.missing else ""))


def cmd_run(args) -> int:
    from harness.grid.execute import execute
    from harness.grid.options import Options

    m = load(args.manifest, args.profile)
    specs = expand(m)
    if args.smoke:
        return _smoke(m, specs, args.device)
    paths = Paths.at(args.workdir)
    opts = Options(paths=paths, data_root=Path(args.data_root).resolve() if args.data_root else None,
                            download=args.download, executor=args.executor, ray_address=args.ray_address,
                            tracking_uri=args.tracking_uri, device=args.device)
    out = execute(m, specs, opts)
    if out.failed:
        for name, err in out.failed:
            print(f"prunebench: run failed: {name}: {err}", file=sys.stderr)
        print(f"prunebench: {len(out.failed)} run(s) failed; fix the cause and re-run the same command "
              f"(finished runs are kept)", file=sys.stderr)
        return 1
    for name, step in out.diverged:
        print(f"prunebench: run diverged (non-finite loss or weights at step {step}): {name}; "
              f"it is marked FAILED/diverged in MLflow and as diverged in the report", file=sys.stderr)
    held = [(name, who) for name, who in out.held if not _finished_now(paths, specs, name)]
    if held:  # another driver of this work directory has them: it finishes and tracks them
        print(f"prunebench: {len(held)} of {out.total} runs are being run by another driver, {held[0][1]}; "
              f"re-run this command when it is done to get the report", file=sys.stderr)
        return 3
    if out.unfinished:
        print(f"prunebench: interrupted: {len(out.unfinished)} of {out.total} runs unfinished; re-run the same "
              f"command to resume (finished runs and rounds are kept)", file=sys.stderr)
        return 130
    print(f"{m.paper.key}/{m.label}: {out.total} runs complete ({out.ran} run now, {out.skipped} already finished)")
    if not args.no_report:
        return cmd_report(argparse.Namespace(manifest=args.manifest, profile=args.profile, workdir=args.workdir,
                                             tracking_uri=args.tracking_uri, out=None, check_against=None,
                                             acc_tol=5.0))
    return 0


def _smoke(m, specs: list[RunSpec], device: str | None) -> int:
    from harness.grid import smoke

    results = smoke.run(specs, device=device)
    failed = [r for r in results if r.error]
    print(f"smoke: {m.paper.key}/{m.label}: {len(results)} distinct cells of {len(specs)} runs: "
          f"{len(results) - len(failed)} ok, {len(failed)} failed ({sum(r.seconds for r in results):.0f} s)")
    for r in failed:
        print(f"prunebench: smoke failed: {r.name}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _finished_now(paths: Paths, specs: list[RunSpec], name: str) -> bool:
    """Whether the run called ``name`` (held by another driver earlier) is finished by now."""
    from harness.grid.describe import run_name
    from harness.stage import finished

    return any(run_name(s) == name and finished(paths, s) for s in specs)


def cmd_report(args) -> int:
    from harness import report
    from harness.tracking import Tracker

    m = load(args.manifest, args.profile)
    specs = expand(m)
    paths = Paths.at(args.workdir)
    tracker = Tracker(args.tracking_uri or paths.tracking_uri)
    results = report.collect(specs, tracker)
    out_dir = Path(args.out) if args.out else paths.report_dir(m.paper.key, m.label)
    summary = report.build(m, specs, results, out_dir)
    print(f"report: {out_dir / 'README.md'} ({summary.n_cells} cells, {summary.n_missing_runs} runs missing)")
    if tracker.client.get_experiment_by_name(m.paper.key) is not None:  # the report in the MLflow UI too
        claims = "; ".join(f"`{c.id}`: {c.outcome}" for c in summary.claims) or "none in this profile"
        complete = "complete" if not summary.n_missing_runs else f"INCOMPLETE ({summary.n_missing_runs} runs missing)"
        tracker.log_report(m.paper.key, m.label, summary.files,
                           f"Report of **{m.paper.title}**, profile `{m.label}` ({complete}): open `report/README.md` "
                           f"in the artifacts for the paper-style tables and plots. Claims: {claims}.")
    for c in summary.claims:
        print(f"  claim {c.id}: {c.outcome}")
    if summary.n_missing_runs:
        print(f"prunebench: the report is incomplete: {summary.n_missing_runs} of {len(specs)} runs have no "
              f"results yet (run `prunebench run {args.manifest} --profile {m.profile}`)", file=sys.stderr)
    if args.check_against:
        problems = report.compare(Path(args.check_against) / "results.csv", out_dir / "results.csv",
                                  acc_tol=args.acc_tol)
        for p in problems:
            print(f"regression: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"regression check against {args.check_against}: passed (accuracy within {args.acc_tol} points, "
              f"densities exact)")
    return 0


def cmd_leaderboard(args) -> int:
    from harness import report
    from harness.grid.execute import execute
    from harness.grid.options import Options
    from harness.report import leaderboard
    from harness.tracking import Tracker

    paths = Paths.at(args.workdir)
    ours = set(args.method)
    loaded = []
    for path in args.overlays:  # every manifest is valid before anything runs
        m = load(path, args.profile)
        if not any(meth in ours for e in m.experiments for meth in e.methods):
            raise ManifestError(f"{path} [profile {args.profile}]: no experiment lists the method "
                                f"{' or '.join(sorted(ours))}")
        loaded.append((path, m, expand(m)))
    failed = 0
    board = leaderboard.Board(method=ours)
    for path, m, specs in loaded:
        if not args.no_run:
            opts = Options(paths=paths, data_root=Path(args.data_root).resolve() if args.data_root else None,
                           download=args.download, executor=args.executor, ray_address=args.ray_address,
                           tracking_uri=args.tracking_uri, device=args.device)
            out = execute(m, specs, opts)
            for name, err in out.failed:
                print(f"prunebench: run failed: {name}: {err}", file=sys.stderr)
            failed += len(out.failed)
            print(f"{m.paper.key}/{m.label}: {out.ran} run now, {out.skipped} already finished")
        tracker = Tracker(args.tracking_uri or paths.tracking_uri)
        results = report.collect(specs, tracker)
        summary = report.build(m, specs, results, paths.report_dir(m.paper.key, m.label))
        print(f"report: {summary.out_dir / 'README.md'} ({summary.n_missing_runs} runs missing)")
        board.rows += leaderboard.standings(m, specs, results, ours)
        board.papers.append((m.paper.key, m.paper.title, m.label))
    name = f"{'+'.join(sorted(ours))}-{args.profile}"
    out_dir = Path(args.out) if args.out else paths.report_dir("leaderboard", name)
    files = leaderboard.write(board, out_dir)
    tracker = Tracker(args.tracking_uri or paths.tracking_uri)
    tracker.log_report("leaderboard", name, files, f"Leaderboard of {', '.join(sorted(ours))} under "
                       f"{len(board.papers)} papers' protocols (profile `{args.profile}`): open `report/README.md`.")
    print(f"leaderboard: {files[0]}")
    for key, _, _ in board.papers:
        c = board.counts(key)
        print(f"  {key}: {c['cells']} cells, best at {c['best']}; ahead {c['ahead']}, within noise "
              f"{c['within noise']}, behind {c['behind']}")
    if failed:
        print(f"prunebench: {failed} run(s) failed; the leaderboard ranks what finished", file=sys.stderr)
        return 1
    return 0


def cmd_plugins(args) -> int:
    from harness.config.plugins import installed

    found = installed()
    if not found:
        print("no prunebench plugins installed (entry point group prunebench.plugins)")
    for name, (module, version) in sorted(found.items()):
        print(f"{name}: {module} {version}")
    return 0


def ui_command(tracking_uri: str, artifact_root: Path | None, host: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]
    return cmd + (["--default-artifact-root", artifact_root.as_uri()] if artifact_root else [])


def experiment_url(base: str, experiment_id: str) -> str:
    """The page of a paper's runs: MLflow 3 opens on its GenAI views unless asked for model training."""
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def cmd_ui(args) -> int:
    from mlflow.tracking import MlflowClient

    paths = Paths.at(args.workdir)
    uri = args.tracking_uri or paths.tracking_uri
    cmd = ui_command(uri, None if args.tracking_uri else paths.artifact_root, "127.0.0.1", int(args.port))
    print(" ".join(cmd))
    base = f"http://127.0.0.1:{args.port}"
    for exp in MlflowClient(uri).search_experiments():
        if exp.name != "Default":
            print(f"  {exp.name}: {experiment_url(base, exp.experiment_id)}")
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
