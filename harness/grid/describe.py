"""What MLflow shows about a job: its path-like name, its short display name, its tags (the grid's axes) and the
two halves of its description (what it is; what it reached)."""

from __future__ import annotations

from pathlib import Path

from harness.config import DenseSpec, Manifest, RunSpec, plugins
from harness.config.resolve import method_parts
from harness.pruning.methods import dense_spec, procedure
from harness.tracking import AXIS_TAG, PATH_TAG, RUN_ID_TAG, code_version


def run_tags(spec: RunSpec | DenseSpec, manifest: Manifest, model_key: str = "", dataset_key: str = "") -> dict[str, str]:
    common = {RUN_ID_TAG: spec.id, AXIS_TAG: "round" if isinstance(spec, DenseSpec) else procedure(spec).axis,
              PATH_TAG: run_name(spec, model_key, dataset_key),
              "paper": manifest.paper.key, "profile": manifest.label,
              "manifest_hash": manifest.digest, "code_version": code_version(), "seed": str(spec.seed),
              **({"plugins": plugins.describe(manifest.plugins)} if manifest.plugins else {})}
    if isinstance(spec, DenseSpec):
        return {**common, "stage": "dense", "model": model_key, "arch": spec.model.arch,
                "dataset": dataset_key, "width": str(spec.model.width)}
    return {**common, "stage": "prune", "experiment": spec.experiment, "method": spec.method,
            "procedure": spec.procedure, "score": spec.score, "allocation": spec.allocation,
            "model": spec.model_key, "arch": spec.model.arch, "width": str(spec.model.width),
            "dataset": spec.dataset_key, "target_sparsity": str(spec.target_sparsity),
            "dense_id": dense_spec(spec).id if dense_spec(spec) else ""}


def display_name(spec: RunSpec | DenseSpec, model_key: str = "", dataset_key: str = "") -> str:
    """The short name the MLflow UI shows: method · model · dataset [· target] · seed."""
    if isinstance(spec, DenseSpec):
        return f"dense · {model_key} · {dataset_key} · s{spec.seed}"
    target = f" · {100 * spec.target_sparsity:g}%" if spec.target_sparsity is not None else ""
    return f"{spec.method} · {spec.model_key} · {spec.dataset_key}{target} · s{spec.seed}"


def run_name(spec: RunSpec | DenseSpec, model_key: str = "", dataset_key: str = "") -> str:
    """The run's full path: experiment/model/dataset/method[/sp<target>]/s<seed> (dense/model/dataset/s<seed>)."""
    if isinstance(spec, DenseSpec):
        return f"dense/{model_key}/{dataset_key}/s{spec.seed}"
    target = f"/sp{spec.target_sparsity}" if spec.target_sparsity is not None else ""
    return f"{spec.experiment}/{spec.model_key}/{spec.dataset_key}/{spec.method}{target}/s{spec.seed}"


def about_run(manifest: Manifest, s: RunSpec, report: Path) -> str:
    """The first half of a pruning run's description: paper, table, method, model, dataset, seed, report."""
    e = manifest.experiment(s.experiment)
    target = f", target sparsity {100 * s.target_sparsity:g}%" if s.target_sparsity is not None else ""
    return (f"**{manifest.paper.title}** ({manifest.paper.venue} {manifest.paper.year}), profile `{manifest.profile}`: "
            f"{e.title}.\n\nMethod `{s.method}` ({method_parts(manifest, s.method)[0].description}) on model "
            f"`{s.model_key}` (`{s.model.arch}`, width {s.model.width:g}), dataset `{s.dataset_key}`, seed {s.seed}"
            f"{target}. Report: `{report / 'README.md'}` (also the artifacts of the run `report · {manifest.label}`).")


def about_dense(model_key: str, dataset_key: str, seed: int) -> str:
    return f"Dense pre-training of `{model_key}` on `{dataset_key}`, seed {seed}."


def reached(final: dict) -> str:
    """The second half of a finished pruning run's description: the density and accuracy it reached."""
    if "test_acc" not in final:
        return ""
    return (f"Reached: density {100 * final['density']:.3g}% of the prunable weights "
            f"({100 * final.get('density_all', float('nan')):.3g}% of all parameters), "
            f"test accuracy {100 * final['test_acc']:.2f}% (final).")


def diverged(info: dict) -> str:
    return f"**Diverged** at step {info['step']} ({info['what']} became non-finite): no result."


DENSE_OUTCOME = "Dense pre-training, shared by every run that starts from it (evaluated in each run's round 0)."
