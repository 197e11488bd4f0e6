"""Manifest loading, validation errors, profiles, grid expansion and run identities."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import ManifestError, TrainingConfig, canonical_json
from harness.config.load import load, run_from_dict
from harness.grid.expand import expand
from harness.pruning.methods import dense_spec

from tests.conftest import LAMP

PINNED_CI_ID = "46469c291d8fa795"  # lamp.yaml ci, first cell (vgg16_w8, global, seed 0)


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def _raw() -> dict:
    return yaml.safe_load(LAMP.read_text())


def _error(tmp_path: Path, mutate, profile: str = "full") -> str:
    raw = _raw()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ManifestError) as e:
        expand(load(path, profile))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_full_grid_is_the_papers():
    m = load(LAMP)
    specs = expand(m)
    main_ = [s for s in specs if s.experiment == "cifar10_main"]
    assert {s.model.arch for s in main_} == {"vgg16_bn_fc1_lamp", "resnet18_cifar_kuangliu",
                                             "densenet_bc_121_g12", "efficientnet_b0_cifar_lamp"}
    assert {s.method for s in specs} == {"global", "uniform", "uniform_plus", "erk", "lamp"}
    assert len(specs) == 4 * 5 + 5 + 5 + 5 + 5 + 5
    by = {(s.experiment, s.model_key, s.method): s for s in specs}
    vgg = by["cifar10_main", "vgg16", "lamp"]
    opt = vgg.training.optimizer
    assert (opt.name, opt.lr, opt.weight_decay, opt.betas) == ("adamw", 3e-4, 0.01, (0.9, 0.999))
    assert (vgg.training.batch_size, vgg.training.pretrain, vgg.training.retrain) == (100, "50000it", "40000it")
    assert vgg.dataset.std == (0.237, 0.243, 0.261) and vgg.dataset.pad_mode == "zeros"  # the paper's (appendix A)
    code = next(s for s in expand(load(LAMP, "code")) if s.model_key == "vgg16" and s.dataset_key == "cifar10")
    assert code.dataset.std == (0.247, 0.243, 0.261)  # the released code's, profile `code`
    assert (vgg.params.prune_rate, vgg.params.rounds, vgg.params.rewind_step) == (0.2, 20, None)
    dn = by["cifar10_main", "densenet", "erk"].training
    assert (dn.pretrain, dn.retrain) == ("80000it", "60000it")
    assert by["svhn_vgg16", "vgg16", "global"].training.retrain == "30000it"
    assert by["cifar100_vgg16", "vgg16", "global"].num_classes == 100
    rw = by["cifar10_rewind", "vgg16", "lamp"]
    assert rw.training.optimizer.name == "adam" and rw.training.optimizer.weight_decay == 0.0
    assert rw.params.rewind_step == 0
    # every method of a (model, dataset, training, seed) shares one dense pre-training
    assert len({dense_spec(s).id for s in main_}) == 4
    assert all(c.value is None for c in m.expected)  # the sheet records no paper numbers
    # Table 1's Restricted ImageNet and Conv-6 rows: iterations and batch as printed (seed 000)
    rin = by["restricted_imagenet_resnet34", "resnet34", "lamp"]
    assert (rin.training.batch_size, rin.training.pretrain, rin.training.retrain) == (128, "80000it", "80000it")
    assert (rin.num_classes, rin.dataset.source, rin.dataset.augment, rin.dataset.image_size) == \
        (9, "restricted_imagenet", "resized_crop_flip", 224)
    assert rin.training.optimizer == opt  # AdamW 3e-4 for every experiment but rewinding
    c6 = by["cifar10_conv6", "conv6", "lamp"]
    assert (c6.training.batch_size, c6.training.pretrain, c6.training.retrain) == (128, "50000it", "40000it")
    assert c6.model.arch == "conv6_frankle" and c6.dataset == vgg.dataset


def test_ci_profile():
    m = load(LAMP, profile="ci")
    specs = expand(m)
    assert len(specs) == 5 * 2 and {s.seed for s in specs} == {0, 1}
    s = specs[0]
    assert s.dataset.source == "fashion_mnist" and s.model.width == 0.125 and s.params.rounds == 3
    assert m.resources.gpu == 0
    assert {d.name for d in m.deviations} >= {"ci_offline_data", "ci_reduced_compute", "mask_mechanism"}


def test_run_ids_are_stable():
    a = [s.id for s in expand(load(LAMP))]
    b = [s.id for s in expand(load(LAMP))]
    assert a == b and len(set(a)) == len(a)
    s = expand(load(LAMP))[0]
    assert run_from_dict(s.to_dict()) == s and run_from_dict(s.to_dict()).id == s.id


def _mutations(obj):
    """Every copy of ``obj`` with exactly one leaf field changed."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            for sub in _mutations(v):
                yield f.name, dataclasses.replace(obj, **{f.name: sub})
            continue
        if isinstance(v, bool):
            new = not v
        elif isinstance(v, (int, float)):
            new = v + 1
        elif isinstance(v, str):
            new = v + "_x"
        elif isinstance(v, tuple):
            new = v[:-1] + (v[-1] + 1,) if v else (1,)
        elif v is None:
            new = 1
        else:
            raise AssertionError(f"unhandled field type {type(v)}")
        try:
            changed = dataclasses.replace(obj, **{f.name: new})
        except ValueError:  # a value its type rejects (e.g. an unknown graph variant) never reaches a spec
            continue
        yield f.name, changed


def test_run_id_changes_with_every_field():
    s = expand(load(LAMP))[0]
    seen = {s.id}
    n = 0
    for name, changed in _mutations(s):
        assert changed.id != s.id, f"changing {name} kept the run id"
        seen.add(changed.id)
        n += 1
    assert n >= 30 and len(seen) == n + 1


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r.update(foo=1), "foo: unknown key"),
    (lambda r: r["defaults"]["training"]["optimizer"].update(lrr=1), "defaults.training.optimizer.lrr: unknown key"),
    (lambda r: r["defaults"]["training"].update(batch_size="100"), "defaults.training.batch_size: expected an integer"),
    (lambda r: r["pruning"]["iterative"].update(prune_rate=1.0), "pruning.iterative.prune_rate: expected a fraction in (0, 1)"),
    (lambda r: r["pruning"].update(iterativ={}), "pruning.iterativ: unknown key (expected one of: prunable, at_init, cycles, dense, dynamic, gradual, iterative, one_shot)"),
    (lambda r: r["pruning"]["iterative"].update(round=3), "pruning.iterative.round: unknown key"),
    (lambda r: r["pruning"]["iterative"].pop("rounds"), "pruning.iterative.rounds: missing (expected an integer)"),
    (lambda r: r["experiments"][0]["methods"].append("incremental"), "experiments[0].sparsities: expected target sparsities"),
    (lambda r: r["experiments"][0].update(methods=["incremental"], sparsities=[0.9]),
     "pruning.gradual.end: missing (expected a string)"),
    (lambda r: r.update(methods={"lamp_fast": {"method": "lamp", "params": {"rounds": 0}}}) or r["experiments"][0]["methods"].append("lamp_fast"),
     "pruning.iterative.rounds: expected a positive integer, got 0"),
    (lambda r: r.update(methods={"lamp": {"method": "lamp"}}), "methods.lamp: 'lamp' is a registered method"),
    (lambda r: r["claims"][0].update(noise={"rule": "ttest"}), "claims[0].noise.rule: expected one of 'stderr', 'none'"),
    (lambda r: r["experiments"][0].update(layout={"kind": "paired"}), "experiments[0].layout.pairs: expected (base, modified) method pairs"),
    (lambda r: r["experiments"][0].update(sparsities=[0.5, 1.0]), "experiments[0].sparsities[1]: expected a sparsity in [0, 1)"),
    (lambda r: r["experiments"][0]["methods"].append("magic"), "experiments[0].methods[5]: unknown method 'magic'"),
    (lambda r: r["models"]["vgg16"].update(arch="vgg17"), "models.vgg16.arch: unknown model 'vgg17'"),
    (lambda r: r["experiments"][1].update(models=["vgg99"]), "experiments[1].models[0]: unknown model 'vgg99'"),
    (lambda r: r["defaults"]["training"].update(pretrain="50k"), "expected a duration like '50000it'"),
    (lambda r: r["pruning"]["iterative"].update(rounds=-2), "pruning.iterative.rounds: expected a positive integer"),
    (lambda r: r["datasets"]["cifar10"].update(pad_mode="mirror"), "datasets.cifar10.pad_mode: expected one of 'zeros', 'reflect'"),
    (lambda r: r["experiments"][0]["model_overrides"]["densenet"]["training"].update(retrain=5), "training.retrain: expected a string"),
    (lambda r: r["paper"].pop("title"), "paper.title: missing"),
])
def test_bad_manifests_get_one_line_errors(tmp_path, mutate, expect):
    assert expect in _error(tmp_path, mutate)


def test_a_renamed_key_still_loads_with_the_same_ids(tmp_path):
    """pruning.iterative.amount_per_round is prune_rate since 0.1.0: a manifest with the old key loads to the same
    specs (and ids: the identity hashes the old name); both keys at once are a one-line error."""
    raw = _raw()
    raw["pruning"]["iterative"]["amount_per_round"] = raw["pruning"]["iterative"].pop("prune_rate")
    old, new = expand(load(_write(tmp_path, raw))), expand(load(LAMP))
    assert [s.id for s in old] == [s.id for s in new] and old == new
    assert '"amount_per_round":0.2' in canonical_json(new[0].params)
    raw["pruning"]["iterative"]["prune_rate"] = 0.2
    with pytest.raises(ManifestError, match=r"pruning\.iterative\.amount_per_round: renamed to prune_rate; give only "
                                            r"prune_rate$"):
        load(_write(tmp_path, raw))


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"profiles: no profile 'tiny' \(expected one of: full, code, ci, claims\)"):
        load(LAMP, "tiny")
    with pytest.raises(ManifestError, match="manifest file not found"):
        load(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("paper: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load(tmp_path / "broken.yaml")


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    raw = _raw()
    raw["experiments"][0]["methods"].append("magic")
    path = _write(tmp_path, raw)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunebench: error: ") and "\n" not in err and "magic" in err
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert "manifest file not found" in capsys.readouterr().err


def test_cli_plan_lists_the_grid(capsys):
    assert main(["plan", str(LAMP), "--ids"]) == 0
    out = capsys.readouterr().out
    assert "cifar10_main" in out and "densenet" in out and "total" in out
    assert "761.08" in out  # VGG-16: 405 M training images x 6 x 313.2 M MACs (common.md §3)
    cells = [l for l in out.splitlines() if " PFLOP  dense " in l]
    assert len(cells) == 45  # every cell with its own compute
    vgg = next(l for l in cells if "cifar10_main/vgg16/cifar10/lamp/" in l)
    assert "80,000,000 images" in vgg  # 20 rounds x 40,000 steps x batch 100 (its dense model is shared)


@pytest.mark.parametrize("path", [
    ("defaults", "training", "optimizer"), ("defaults", "eval"), ("datasets", "fashion_mnist_ci"),
    ("models", "vgg16_w8"), ("pruning", "iterative"), ("resources",), ("defaults", "training"), (),
])
def test_validate_checks_every_profile(tmp_path, capsys, path):
    """An unknown key anywhere under profiles.ci.set fails `validate` (which checks every profile)."""
    raw = _raw()
    node = raw["profiles"]["ci"]["set"]
    for k in path:
        node = node.setdefault(k, {})
    node["bogus_key"] = 1
    f = _write(tmp_path, raw)
    load(f)  # the full profile alone is fine ...
    assert main(["validate", str(f)]) == 2  # ... but validate looks inside every profile
    err = capsys.readouterr().err.strip()
    assert "[profile ci]" in err and "bogus_key: unknown key" in err and "\n" not in err
    assert main(["validate", str(f), "--profile", "full"]) == 0


def test_validate_lists_every_profile(capsys):
    assert main(["validate", str(LAMP)]) == 0
    out = capsys.readouterr().out
    assert "[full]: valid" in out and "[ci]: valid" in out


def test_methods_carry_their_own_parameters(tmp_path):
    raw = _raw()
    raw["methods"] = {"lamp_short": {"method": "lamp", "params": {"rounds": 2}}}
    raw["experiments"][0]["methods"].append("lamp_short")
    specs = expand(load(_write(tmp_path, raw)))
    by = {(s.model_key, s.method): s for s in specs if s.experiment == "cifar10_main"}
    assert by["vgg16", "lamp_short"].params.rounds == 2 and by["vgg16", "lamp"].params.rounds == 20
    assert by["vgg16", "lamp_short"].score == "lamp" and by["vgg16", "lamp_short"].procedure == "iterative"
    assert by["vgg16", "lamp_short"].params.prune_rate == 0.2  # the rest from pruning.iterative


def test_adding_a_defaulted_field_keeps_every_id():
    """OpenLTH-style identities: a field at its default value does not enter the hash."""
    specs = expand(load(LAMP)) + expand(load(LAMP, "ci"))
    Bigger = dataclasses.make_dataclass(
        "TrainingConfig", [("new_knob", float, dataclasses.field(default=0.5))], bases=(TrainingConfig,), frozen=True)
    for s in specs:
        bigger = dataclasses.replace(s, training=Bigger(**dataclasses.asdict(s.training) | {
            "optimizer": s.training.optimizer, "lr_schedule": s.training.lr_schedule}))
        assert bigger.id == s.id
        assert dataclasses.replace(bigger, training=dataclasses.replace(bigger.training, new_knob=0.7)).id != s.id
    # a known id, pinned: the same manifest keeps giving the same ids across code changes
    assert expand(load(LAMP, "ci"))[0].id == PINNED_CI_ID


def test_dense_key_ignores_evaluation_settings():
    s = expand(load(LAMP, "ci"))[0]
    other = dataclasses.replace(s, eval=dataclasses.replace(s.eval, batch_size=17, test_examples=3))
    assert other.id != s.id and dense_spec(other).id == dense_spec(s).id
    assert dense_spec(dataclasses.replace(s, seed=5)).id != dense_spec(s).id
