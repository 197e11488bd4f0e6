"""Evaluating and measuring a model, defined once for every procedure: accuracy and loss on the evaluation splits,
densities and nonzero MACs, the dead-neuron rate, the mask-graph metrics, and the record of the data a run used."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness import metrics
from harness.config.schema import DatasetConfig, EvalConfig
from harness.data.device import DeviceData
from harness.paths import atomic_write_text
from harness.pruning import graph
from harness.pruning.masks import MaskSet, overall_density
from harness.train import evaluate, stage_seed

__all__ = ["evaluate_model", "measure", "dead_neuron_metrics", "graph_metrics", "data_record"]


def evaluate_model(model: nn.Module, data: DeviceData, ev: EvalConfig, seed: int, precision: str) -> dict:
    """Test accuracy and loss, train accuracy and loss (on ``ev.train_examples``, augmented when
    ``ev.train_augmented``, drawn from the seed's own ``eval`` stream), and the validation split's when there is one."""
    gen = torch.Generator(device=data.device).manual_seed(stage_seed(seed, "eval"))
    split = "train_augmented" if ev.train_augmented else "train"
    train_acc, train_loss = evaluate(
        model, data.eval_batches(split, ev.batch_size, ev.train_examples, generator=gen), precision)
    test_acc, test_loss = evaluate(model, data.eval_batches("test", ev.batch_size, ev.test_examples), precision)
    out = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss}
    if data.has_val:
        out["val_acc"], out["val_loss"] = evaluate(model, data.eval_batches("val", ev.batch_size), precision)
    return out


def measure(model: nn.Module, masks: MaskSet, dense_macs: int, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict:
    """Densities (prunable set and all parameters), nonzero-MAC fraction (of one ``input_shape`` image), per-layer
    densities."""
    _, nonzero = metrics.macs(model, masks.masks, input_shape)
    return {"density": masks.density(), "density_all": overall_density(model),
            "macs_fraction": nonzero / dense_macs, "layer_density": masks.layer_density()}


def dead_neuron_metrics(model: nn.Module, data: DeviceData, ev: EvalConfig, per_layer: bool = False) -> dict:
    """The harness-defined post-training dead-neuron rate (:func:`harness.metrics.dead_neuron_rate`) on the test split
    (``ev.test_examples``, batches of ``ev.batch_size``): ``{"dead_neuron_rate": overall}``, plus
    ``{"dnr_layers": {site: rate}}`` with ``per_layer``. Empty for a model without ``nn.ReLU`` modules."""
    overall, layers = metrics.dead_neuron_rate(model, data.eval_batches("test", ev.batch_size, ev.test_examples))
    if not layers:
        return {}
    return {"dead_neuron_rate": overall, **({"dnr_layers": layers} if per_layer else {})}


def graph_metrics(masks: MaskSet, ev: EvalConfig, csv_path: Path | None = None,
                  init_coordinates: dict | None = None) -> dict:
    """The mask-graph metrics of ``masks`` with their weights as edge weights (pags.md 3.3): the model-level numbers
    (``graph_*``), and one row per layer in ``csv_path``. ``init_coordinates``: the reference network's coordinates
    for ``graph.reference: init`` (default: the dense network's)."""
    rows = graph.layer_table({n: p.detach() for n, p in masks.params.items()}, masks.masks, ev.graph,
                             init_coordinates=init_coordinates)
    if csv_path is not None:
        atomic_write_text(csv_path, graph.to_csv(rows))
    return graph.summary(rows, ev.graph)


def data_record(data: DeviceData, ds: DatasetConfig) -> dict:
    """What a run trained and was evaluated on, for its MLflow dataset input: the content digest of the images and
    labels actually used (after subsets and the validation split) and split sizes."""
    return {"source": ds.source, "digest": data.fingerprint(), "train": data.n_train, "test": data.n_test,
            "validation": data.n_val, "train_subset": ds.train_subset, "test_subset": ds.test_subset}
