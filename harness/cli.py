"""``prunebench validate | plan | run | report | ui`` (also ``python -m harness``)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections import defaultdict
from pathlib import Path

from harness.config import ManifestError, RunSpec, expand, load, load_all, train_size
from harness.data import DataError
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
    p = sub.add_parser("report", help="turn the tracked runs into the paper's tables, claims and plots")
    _manifest_args(p)
    _store_args(p)
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/reports/<paper>/<profile>)")
    p.add_argument("--check-against", default=None, metavar="DIR",
                   help="regression check: compare with the results.csv in DIR (exit 1 on a difference)")
    p.add_argument("--acc-tol", type=float, default=5.0, help="regression tolerance in accuracy points (default 5)")
    p = sub.add_parser("ui", help="start the MLflow UI on the store")
    _store_args(p)
    p.add_argument("--port", default="5000")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "report": cmd_report,
                "ui": cmd_ui}[args.command](args)
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
def _model_cost(arch: str, width: float, num_classes: int) -> tuple[int, int]:
    """(parameters, forward MACs per image) of a model."""
    from harness.metrics import count_params, macs
    from harness.models import build_model

    model = build_model(arch, num_classes, width)
    return count_params(model), macs(model)[0]


def cmd_plan(args) -> int:
    from harness.tracking import run_name

    m = load(args.manifest, args.profile)
    specs = expand(m)
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for s in specs:
        groups[(s.experiment, s.model_key, s.dataset_key)].append(s)
    print(f"{m.paper.title} ({m.paper.venue} {m.paper.year}) — profile {m.profile}")
    header = f"{'experiment':<16} {'model':<10} {'params':>11} {'dataset':<16} {'seeds':>5} " \
             f"{'runs':>5} {'dense':>5} {'train images':>14} {'PFLOP':>9}  methods"
    print(header)
    print("-" * len(header))
    dense_seen: set[str] = set()
    tot_runs = tot_dense = tot_img = 0
    tot_flop = 0.0
    plan_rows = []  # (experiment, model, dataset, training images, a spec of the row) for the hours
    for (exp, model, ds), ss in groups.items():
        images = flop = 0
        n_dense = 0
        n_params, fwd = _model_cost(ss[0].model.arch, ss[0].model.width, ss[0].num_classes)
        n_train = train_size(ss[0].dataset)
        for s in ss:
            pre, own = s.proc.images(s, n_train)
            select = s.proc.selection_cost(s, n_train)
            images += own + select
            flop += 6 * fwd * (own + select)
            if s.dense is not None and s.dense.id not in dense_seen:
                dense_seen.add(s.dense.id)
                n_dense += 1
                images += pre
                flop += 6 * fwd * pre
        tot_runs += len(ss)
        tot_dense += n_dense
        tot_img += images
        tot_flop += flop
        plan_rows.append((exp, model, ds, images, ss[0]))
        methods = ", ".join(dict.fromkeys(s.method for s in ss))
        print(f"{exp:<16} {model:<10} {n_params:>11,} {ds:<16} {len({s.seed for s in ss}):>5} {len(ss):>5} "
              f"{n_dense:>5} {images:>14,} {flop / 1e15:>9.2f}  {methods}")
    print("-" * len(header))
    print(f"{'total':<16} {'':<10} {'':>11} {'':<16} {'':>5} {tot_runs:>5} {tot_dense:>5} "
          f"{tot_img:>14,} {tot_flop / 1e15:>9.2f}")
    by_summary: dict[str, list[str]] = defaultdict(list)
    for s in specs:
        line = s.proc.summary(s)
        if s.method not in by_summary[line]:
            by_summary[line].append(s.method)
    for line, methods in by_summary.items():
        print(f"  {', '.join(methods)}: {line}")
    print("compute: training FLOPs ≈ 6 × forward MACs × training images (dense kernels with masks), mask "
          "selection passes included; evaluation passes excluded")
    _print_hours(m, plan_rows, args)
    if args.ids:  # every cell with its own compute (its shared dense pre-training listed, not counted)
        for s in specs:
            _, fwd = _model_cost(s.model.arch, s.model.width, s.num_classes)
            own = sum(s.proc.images(s, train_size(s.dataset))[1:]) + s.proc.selection_cost(s, train_size(s.dataset))
            dense = f"  dense {s.dense.id}" if s.dense else ""
            print(f"{s.id}  {run_name(s):<72} {own:>13,} images {6 * fwd * own / 1e15:>9.3f} PFLOP{dense}")
    return 0


def _trials_per_device(res, cuda: bool, cores: int) -> int:
    """How many trials of these resources share one device: 1/gpu on a GPU, cores/cpu on the CPU."""
    share = res.gpu if cuda else res.cpu / max(cores, 1)
    return max(1, int(1 / share + 1e-9)) if 0 < share < 1 else 1


def _print_hours(m, plan_rows: list, args) -> None:
    """Training hours of each row on this device from the latest benchmark figure of its model."""
    import re

    from harness.config import resources_for
    from harness.figures import FIGURES, device_name, load_figures, lookup

    path = Path(args.figures) if args.figures else FIGURES
    figures = load_figures(path)
    device = args.device_name or device_name()
    cpu = re.fullmatch(r"CPU .* x(\d+) threads", device)  # device_name()'s CPU form; anything else is a GPU
    cores = int(cpu.group(1)) if cpu else (os.cpu_count() or 1)
    known = sorted({f["device"] for f in figures})

    def on(threads: int) -> str:  # a CPU trial runs on as many threads as its resources.cpu
        return re.sub(r"x\d+ threads$", f"x{threads} threads", device) if cpu else device

    if not any(f["device"] in {device, *(on(t) for t in range(1, cores + 1))} for f in figures):
        print(f"hours: no benchmark figure for device '{device}' in {path} (figures exist for: "
              f"{'; '.join(known) or 'none'}); run `make bench` here or pass --device-name")
        return
    print(f"hours on {device} (training steps at the latest measured images/s of {path.name}, one trial at a "
          f"time{' on its resources.cpu threads' if cpu else ''}; 'packed': the manifest's resources sharing the "
          f"device, where measured; evaluation excluded):")
    total = total_packed = 0.0
    missing: list[str] = []
    for exp, model, ds, images, s in plan_rows:
        t, arch, width = s.training, s.model.arch, s.model.width
        opts = dict(batch=t.batch_size, precision=t.precision, channels_last=t.channels_last, compile=t.compile)
        res = resources_for(m, s)
        fig = lookup(figures, arch, width, on(max(1, min(int(res.cpu), cores))), **opts) \
            or lookup(figures, arch, width, device, **opts)
        if fig is None:
            missing.append(f"{model} ({arch} width {width:g})")
            continue
        hours = images / fig["images_per_s"] / 3600
        total += hours
        k = _trials_per_device(res, cpu is None, cores)
        packed = lookup(figures, arch, width, device, trials=k, **opts) if k > 1 else None
        packed_h = images / packed["images_per_s"] / 3600 if packed else hours
        total_packed += packed_h
        extra = f"; packed {k} per device: {packed['images_per_s']:,.0f} img/s -> {packed_h:,.2f} h" if packed else ""
        threads = f", {' '.join(fig['device'].split()[-2:])}" if cpu else ""
        print(f"  {exp:<16} {model:<10} {ds:<16} {hours:>10,.2f} h at {fig['images_per_s']:,.0f} img/s "
              f"({fig['benchmark']}, batch {fig['batch']}, {fig['precision']}{threads}, {fig['date']}){extra}")
    if missing:
        print(f"  no figure on this device for: {', '.join(dict.fromkeys(missing))} (not in the total)")
    print(f"  total: {total:,.2f} h one trial at a time" +
          (f", {total_packed:,.2f} h packed" if total_packed != total else "") +
          (" (rows with a figure only)" if missing else ""))


def cmd_run(args) -> int:
    from harness import schedule

    m = load(args.manifest, args.profile)
    specs = expand(m)
    paths = Paths.at(args.workdir)
    opts = schedule.Options(paths=paths, data_root=Path(args.data_root).resolve() if args.data_root else None,
                            download=args.download, executor=args.executor, ray_address=args.ray_address,
                            tracking_uri=args.tracking_uri, device=args.device)
    out = schedule.execute(m, specs, opts)
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
    print(f"{m.paper.key}/{m.profile}: {out.total} runs complete ({out.ran} run now, {out.skipped} already finished)")
    if not args.no_report:
        return cmd_report(argparse.Namespace(manifest=args.manifest, profile=args.profile, workdir=args.workdir,
                                             tracking_uri=args.tracking_uri, out=None, check_against=None,
                                             acc_tol=5.0))
    return 0


def _finished_now(paths: Paths, specs: list[RunSpec], name: str) -> bool:
    """Whether the run called ``name`` (held by another driver earlier) is finished by now."""
    from harness import experiment
    from harness.tracking import run_name

    return any(run_name(s) == name and experiment.finished(paths, s) for s in specs)


def cmd_report(args) -> int:
    from harness import report
    from harness.tracking import Tracker

    m = load(args.manifest, args.profile)
    specs = expand(m)
    paths = Paths.at(args.workdir)
    tracker = Tracker(args.tracking_uri or paths.tracking_uri)
    results = report.collect(specs, tracker)
    out_dir = Path(args.out) if args.out else paths.report_dir(m.paper.key, m.profile)
    summary = report.build(m, specs, results, out_dir)
    print(f"report: {out_dir / 'README.md'} ({summary.n_cells} cells, {summary.n_missing_runs} runs missing)")
    if tracker.client.get_experiment_by_name(m.paper.key) is not None:  # the report in the MLflow UI too
        claims = "; ".join(f"`{c.id}`: {c.outcome}" for c in summary.claims) or "none in this profile"
        complete = "complete" if not summary.n_missing_runs else f"INCOMPLETE ({summary.n_missing_runs} runs missing)"
        tracker.log_report(m.paper.key, m.profile, summary.files,
                           f"Report of **{m.paper.title}**, profile `{m.profile}` ({complete}): open `report/README.md` "
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
