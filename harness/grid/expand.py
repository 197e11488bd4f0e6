"""The grid: a manifest's experiments expanded into one frozen :class:`~harness.config.specs.RunSpec` per cell
(experiment, model, dataset, method, target sparsity, seed), each resolved by :func:`harness.config.resolve
.resolve_cell`. Torch-free (``prunebench validate`` and ``plan`` expand grids)."""

from __future__ import annotations

from harness.config.resolve import method_parts, resolve_cell
from harness.config.schema import Manifest, Resources
from harness.config.specs import RunSpec
from harness.data.sources import SOURCES
from harness.pruning.methods import PROCEDURES

__all__ = ["expand", "resources_for"]


def expand(m: Manifest) -> list[RunSpec]:
    """Every grid cell of every experiment, in a stable order."""
    specs: list[RunSpec] = []
    seen: set[str] = set()
    for e in m.experiments:
        cells: dict[tuple[str, str], tuple] = {}
        for model_key in e.models:
            for dataset_key in e.datasets:
                ds = m.datasets[dataset_key]
                for method_key in e.methods:
                    if (model_key, method_key) not in cells:
                        cells[model_key, method_key] = resolve_cell(m, e, model_key, method_key, m.path, e.name)
                    training, ev, prunable, params = cells[model_key, method_key]
                    method, _ = method_parts(m, method_key)
                    targets = e.model_sparsities.get(model_key, e.sparsities) if PROCEDURES[method.procedure].needs_sparsity else (None,)
                    for target in targets:
                        for seed in e.seeds:
                            spec = RunSpec(
                                paper=m.paper.key, experiment=e.name, method=method_key,
                                procedure=method.procedure, score=method.score,
                                allocation=method.allocation, model_key=model_key,
                                model=m.models[model_key], dataset_key=dataset_key, dataset=ds,
                                num_classes=SOURCES[ds.source].classes, training=training, eval=ev,
                                prunable=prunable, params=params, seed=seed, target_sparsity=target,
                            )
                            if spec.id not in seen:
                                seen.add(spec.id)
                                specs.append(spec)
    return specs


def resources_for(m: Manifest, spec: RunSpec) -> Resources:
    return m.experiment(spec.experiment).resources or m.resources
