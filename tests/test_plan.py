"""`prunebench plan` turns the compute estimate into hours from the benchmark figures
(benchmarks/figures.json), and the figures file itself (issue "Training speed", item 4)."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.figures import FIGURES, device_name, entry, load_figures, lookup, record
from tests.conftest import LAMP

DEVICE = "CPU Test Machine x2 threads"


def _fig(images_per_s, *, arch="vgg16_bn_fc1_lamp", width=0.125, batch=100, trials=1, date="2026-11-21",
         device=DEVICE, benchmark="bench_train", **kw):
    return {**entry(benchmark, arch, width, batch, images_per_s, device, trials=trials, **kw), "date": date}


def _ci_images(out: str) -> int:
    row = next(line for line in out.splitlines() if line.startswith("cifar10_main") and " h at " not in line)
    return int(row.split()[7].replace(",", ""))


def test_plan_prints_hours_from_the_latest_figure_of_the_model_on_this_device(tmp_path, capsys):
    figures = tmp_path / "figures.json"
    record([_fig(500.0, date="2026-01-01"), _fig(1000.0),  # the later figure wins
            _fig(1500.0, trials=2, benchmark="bench_packing"),  # ci resources {cpu: 1} on 2 threads: 2 per device
            _fig(9.0, device="Another GPU")], figures)
    assert main(["plan", str(LAMP), "--profile", "ci", "--figures", str(figures), "--device-name", DEVICE]) == 0
    out = capsys.readouterr().out
    images = _ci_images(out)
    assert f"hours on {DEVICE}" in out
    line = next(line for line in out.splitlines() if " h at " in line)
    assert line.split()[:3] == ["cifar10_main", "vgg16_w8", "fashion_mnist_ci"]
    assert f"{images / 1000 / 3600:,.2f} h at 1,000 img/s (bench_train, batch 100, fp32, x2 threads, 2026-11-21)" in line
    assert f"packed 2 per device: 1,500 img/s -> {images / 1500 / 3600:,.2f} h" in line
    assert f"total: {images / 1000 / 3600:,.2f} h one trial at a time, {images / 1500 / 3600:,.2f} h packed" in out
    # a figure on the trial's own thread count (resources.cpu = 1) is the better one-trial figure
    record([_fig(700.0, device="CPU Test Machine x1 threads")], figures)
    assert main(["plan", str(LAMP), "--profile", "ci", "--figures", str(figures), "--device-name", DEVICE]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if " h at " in line)
    assert f"{images / 700 / 3600:,.2f} h at 700 img/s (bench_train, batch 100, fp32, x1 threads, 2026-11-21)" in line


def test_plan_says_when_no_figure_exists(tmp_path, capsys):
    figures = tmp_path / "figures.json"
    record([_fig(1000.0, device="Another GPU")], figures)
    assert main(["plan", str(LAMP), "--profile", "ci", "--figures", str(figures), "--device-name", DEVICE]) == 0
    out = capsys.readouterr().out
    assert f"hours: no benchmark figure for device '{DEVICE}'" in out and "Another GPU" in out
    assert " h at " not in out
    record([_fig(1000.0, arch="resnet20_cifar_optb")], figures)  # the device, but not the model
    assert main(["plan", str(LAMP), "--profile", "ci", "--figures", str(figures), "--device-name", DEVICE]) == 0
    out = capsys.readouterr().out
    assert "no figure on this device for: vgg16_w8 (vgg16_bn_fc1_lamp width 0.125)" in out
    assert "total: 0.00 h one trial at a time (rows with a figure only)" in out


def test_lookup_prefers_the_same_settings_then_the_nearest_batch_then_the_latest():
    figs = [_fig(100.0, batch=64), _fig(200.0, batch=128), _fig(300.0, batch=128, date="2026-12-01"),
            _fig(400.0, batch=128, precision="bf16"), _fig(500.0, batch=128, trials=4)]
    assert lookup(figs, "vgg16_bn_fc1_lamp", 0.125, DEVICE, batch=100)["images_per_s"] == 300.0
    assert lookup(figs, "vgg16_bn_fc1_lamp", 0.125, DEVICE, batch=70)["images_per_s"] == 100.0
    assert lookup(figs, "vgg16_bn_fc1_lamp", 0.125, DEVICE, batch=128, precision="bf16")["images_per_s"] == 400.0
    assert lookup(figs, "vgg16_bn_fc1_lamp", 0.125, DEVICE, batch=128, trials=4)["images_per_s"] == 500.0
    assert lookup(figs, "vgg16_bn_fc1_lamp", 1.0, DEVICE) is None
    assert lookup(figs, "vgg16_bn_fc1_lamp", 0.125, "Another GPU") is None


def test_record_replaces_a_measurement_of_the_same_setting(tmp_path):
    path = tmp_path / "figures.json"
    record([_fig(100.0), _fig(200.0, batch=64)], path)
    record([_fig(150.0)], path)
    assert sorted(f["images_per_s"] for f in load_figures(path)) == [150.0, 200.0]
    assert load_figures(tmp_path / "missing.json") == []


def test_committed_figures_are_well_formed():
    figures = load_figures(FIGURES)
    assert figures, "benchmarks/figures.json has no figures"
    for f in figures:
        assert {"benchmark", "arch", "width", "batch", "precision", "device", "trials", "images_per_s", "date",
                "torch"} <= set(f), f
        assert f["images_per_s"] > 0 and f["trials"] >= 1
    json.loads(FIGURES.read_text())


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_device_name_names_the_threads(threads):
    assert device_name("cpu", threads).startswith("CPU ") and device_name("cpu", threads).endswith(f"x{threads} threads")
