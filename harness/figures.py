"""Benchmark figures: measured training throughput, machine-readable (``benchmarks/figures.json``).

The benchmark scripts (``benchmarks/bench_train.py --record``, ``benchmarks/bench_packing.py
--record``) add one entry per measurement; ``prunebench plan`` turns a manifest's training images
into hours on this machine from the latest entry for the same model and device. An entry::

    {"benchmark": "bench_train", "arch": "vgg16_bn_fc1_lamp", "width": 0.125, "batch": 100,
     "precision": "fp32", "channels_last": false, "compile": false, "device": "CPU AMD EPYC x2 threads",
     "trials": 1, "images_per_s": 903.0, "date": "2026-11-21", "torch": "2.15.0"}

``trials`` is how many trials shared the device (``bench_packing``); ``images_per_s`` is then their
aggregate. Timings are only comparable on the same ``device`` string, which names the GPU, or the
CPU model and the number of threads a trial used.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

FIGURES = Path(__file__).resolve().parent.parent / "benchmarks" / "figures.json"
KEY = ("benchmark", "arch", "width", "batch", "precision", "channels_last", "compile", "device", "trials")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_name(index: int = 0) -> str | None:
    """The name NVIDIA's driver gives GPU ``index`` (what ``torch.cuda.get_device_name`` reports), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out if line.strip()]
    return names[index] if index < len(names) else None


def device_name(device: str | None = None, threads: int | None = None) -> str:
    """The GPU's name, or ``CPU <model> x<threads> threads`` (default threads: the cores this process may use).
    ``device`` ``cuda[:i]``, ``cpu`` or None (the GPU when there is one)."""
    device = str(device) if device is not None else None
    if device is None or device.startswith("cuda"):
        index = int(device.split(":")[1]) if device and ":" in device else 0
        name = gpu_name(index)
        if name is not None:
            return name
    return f"CPU {cpu_model()} x{threads or len(os.sched_getaffinity(0))} threads"


def load_figures(path: str | Path = FIGURES) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("figures", []))


def entry(benchmark: str, arch: str, width: float, batch: int, images_per_s: float, device: str, *,
          precision: str = "fp32", channels_last: bool = False, compile: bool = False, trials: int = 1,
          **extra) -> dict:
    """One figure, dated today, with the torch version."""
    return {"benchmark": benchmark, "arch": arch, "width": float(width), "batch": int(batch), "precision": precision,
            "channels_last": channels_last, "compile": compile, "device": device, "trials": int(trials),
            "images_per_s": round(float(images_per_s), 1), "date": datetime.date.today().isoformat(),
            "torch": importlib.metadata.version("torch").split("+")[0], **extra}


def record(new: list[dict], path: str | Path = FIGURES) -> None:
    """Add ``new`` to the file, each replacing an older entry with the same key (same benchmark,
    model, width, batch, precision, switches, device and trials)."""
    path = Path(path)
    keep = {tuple(f.get(k) for k in KEY): f for f in load_figures(path)}
    for f in new:
        keep[tuple(f.get(k) for k in KEY)] = f
    rows = sorted(keep.values(), key=lambda f: (f["device"], f["arch"], f["width"], f["batch"], f["trials"],
                                                f["benchmark"], f["precision"], f["channels_last"], f["compile"]))
    path.write_text(json.dumps({"figures": rows}, indent=1) + "\n")


def lookup(figures: list[dict], arch: str, width: float, device: str, *, batch: int | None = None,
           precision: str = "fp32", channels_last: bool = False, compile: bool = False,
           trials: int = 1) -> dict | None:
    """The best figure for one model on one device with ``trials`` sharing it: the same precision
    and switches and batch if measured, else the nearest batch; the latest date among equals.
    None when the device has no figure for that model at that width."""
    cands = [f for f in figures if f["arch"] == arch and abs(f["width"] - width) < 1e-9 and f["device"] == device
             and f.get("trials", 1) == trials]
    if not cands:
        return None

    def rank(f: dict):
        same = (f["precision"] == precision) + (f.get("channels_last", False) == channels_last) \
            + (f.get("compile", False) == compile)
        dist = abs(f["batch"] - batch) if batch is not None else 0
        return (-same, dist, [-ord(c) for c in f["date"]])

    return min(cands, key=rank)
