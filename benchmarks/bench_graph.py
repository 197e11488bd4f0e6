"""Cost of PAGS's mask-graph distance for one candidate mask (pags.md sections 7.2 and 8, defect 2).

For each model, one random mask at the given density (independent Bernoulli per entry, the Rand/ERK-like
per-layer density) is drawn on torchvision's ResNet-34 and VGG-16-BN (the PAGS models, 10 classes). The
benchmark then times the per-layer work of ``harness.pruning.graph.distance`` with each top-2 route: the
spectra of the valid layers only, which is what a sampler pays per candidate. ``--end-to-end`` also times one
``distance()`` call. The routes are ``gram`` (float64 eigvalsh of the smaller Gram matrix) and ``svd`` (float64
``torch.linalg.svdvals`` on B and Bw). The output also has the time of each of the largest layers, and the time
of the dense reference coordinates (``reference="init"``, computed once per run).

    python benchmarks/bench_graph.py [--models vgg16_bn_tv_4096fc resnet34_tv_imagenet_stem] [--density 0.1]
                                     [--methods gram svd] [--device cpu|cuda] [--repeat 1] [--end-to-end]
                                     [--no-reference] [--json out.json]

Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.models.build import build_model  # noqa: E402
from harness.pruning import graph  # noqa: E402
from harness.pruning.masks import prunable_parameters  # noqa: E402
from harness.train import sync  # noqa: E402



def _timed(fn, device: torch.device, repeat: int) -> tuple[float, object]:
    """Best-of-``repeat`` wall time in seconds (after one warm-up call on CUDA) and the last result."""
    if device.type == "cuda":
        fn()
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def bench(arch: str, density: float, methods: list[str], device: torch.device, repeat: int, top: int,
          end_to_end: bool, reference: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10).to(device)
    weights = {n: p.detach() for n, p in prunable_parameters(model, "conv_and_linear_weights").items()}
    gen = torch.Generator(device=device).manual_seed(1)
    masks = {n: torch.rand(w.shape, generator=gen, device=device) < density for n, w in weights.items()}
    largest = sorted(weights, key=lambda n: -weights[n].numel())[:top]
    out: dict = {"arch": arch, "density": density, "layers": len(weights),
                 "weights": sum(w.numel() for w in weights.values()), "methods": {}}
    for method in methods:
        # one pass, layer by layer: the same calls as distance() (spectra of valid layers only), each timed
        per_layer, metrics = {}, []
        for n, w in weights.items():
            tl, lm = _timed(lambda: graph.layer_metrics(w, masks[n], name=n, method=method, compute_invalid=False),
                            device, repeat)
            per_layer[n] = {"shape": list(w.shape), "valid": lm.valid, "seconds": tl, "sigma2": lm.sigma2,
                            "omega2": lm.omega2}
            metrics.append(lm)
        total = sum(r["seconds"] for r in per_layer.values())
        D = graph.distance(metrics)
        res = {"sum_of_layers_seconds": total, "D": D,
               "largest_layers": {n: per_layer[n] for n in largest}, "layers": per_layer}
        print(f"{arch} d={density} {method}: {total:.3f} s over {len(per_layer)} layers, D = {D:.9f}", flush=True)
        for n in largest:
            r = per_layer[n]
            print(f"    {n} {r['shape']}: {r['seconds']:.3f} s  sigma2={r['sigma2']:.9f} omega2={r['omega2']:.9f}",
                  flush=True)
        if end_to_end:
            t, D2 = _timed(lambda: graph.distance(weights, masks, method=method), device, repeat)
            res["distance_seconds"] = t
            print(f"    distance() end to end: {t:.3f} s (D = {D2:.9f})", flush=True)
        out["methods"][method] = res
    if reference:
        t, _ = _timed(lambda: graph.reference_coordinates(weights, names=list(masks)), device, 1)
        out["dense_reference_seconds"] = t
        print(f"{arch}: dense reference coordinates (gram, once per run) {t:.3f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vgg16_bn_tv_4096fc", "resnet34_tv_imagenet_stem"])
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--methods", nargs="+", default=["gram", "svd"], choices=list(graph.METHODS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--top", type=int, default=3, help="print this many largest layers")
    ap.add_argument("--end-to-end", action="store_true", help="also time one distance() call per method")
    ap.add_argument("--no-reference", action="store_true", help="skip the dense reference coordinates")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    info = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(json.dumps(info), flush=True)
    results = [bench(a, args.density, args.methods, device, args.repeat, args.top, args.end_to_end,
                     not args.no_reference) for a in args.models]
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
