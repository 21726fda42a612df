"""The experiment file: how variants are resolved from the base, the quick tables and seeds, the built-in
presets, and the errors for bad files."""

from __future__ import annotations

import pytest
import tomli_w

from tests.experiments.conftest import DROPOUT_LAYERS, tiny_experiment, write_experiment
from trainwell.cli import main
from trainwell.errors import ConfigError
from trainwell.experiments.spec import load_experiment, parse_experiment, plan_runs, preset_names


def parsed(data: dict, source: str = "exp.toml"):
    return parse_experiment(tomli_w.dumps(data), source)


def test_variants_merge_onto_the_base_and_quick_onto_them(blob_npz):
    data = tiny_experiment(blob_npz)
    data["variants"][1]["set"]["train"] = {"optimizer": {"learning_rate": 0.05}}
    data["variants"][1]["quick"] = {"train": {"batch_size": 16}}
    exp = parsed(data)
    full = {p.folder: p for p in plan_runs(exp)}
    quick = {p.folder: p for p in plan_runs(exp, quick=True)}
    # the layer list is replaced whole; the optimizer table merges (nadam kept, learning rate replaced)
    assert [layer.type for layer in full["dropout"].config.model.layers] == [
        d["type"] for d in DROPOUT_LAYERS
    ]
    assert full["dropout"].config.train.optimizer.name == "nadam"
    assert full["dropout"].config.train.optimizer.learning_rate == 0.05
    assert full["plain"].config.train.optimizer.learning_rate == 0.01
    assert full["plain"].config.train.epochs == 3 and quick["plain"].config.train.epochs == 2
    assert quick["dropout"].config.train.batch_size == 16 and quick["plain"].config.train.batch_size == 32
    assert full["dropout"].config.name == "tiny-dropout"
    assert full["dropout"].variant.mc_dropout == 20


def test_unset_removes_a_table_after_all_merging(blob_npz):
    data = tiny_experiment(blob_npz)
    data["quick"]["train"]["early_stopping"] = {"patience": 5}
    data["variants"][1]["unset"] = ["train.early_stopping"]
    exp = parsed(data)
    for quick in (False, True):
        plans = {p.folder: p for p in plan_runs(exp, quick=quick)}
        assert plans["dropout"].config.train.early_stopping is None
        assert plans["plain"].config.train.early_stopping.patience == (5 if quick else 1)
    data["variants"][1]["unset"] = ["train.nothing"]
    with pytest.raises(ConfigError, match=r"variants \(dropout\).unset: 'train.nothing' is not a key"):
        plan_runs(parsed(data))


def test_repeat_gives_seeded_folders_and_only_selects(blob_npz):
    exp = parsed(tiny_experiment(blob_npz, repeat=2))
    plans = plan_runs(exp)
    assert [(p.folder, p.seed, p.config.train.seed) for p in plans] == [
        ("plain-seed42", 42, 42),
        ("plain-seed43", 43, 43),
        ("dropout-seed42", 42, 42),
        ("dropout-seed43", 43, 43),
    ]
    assert [p.folder for p in plan_runs(exp, repeat=1, only=["dropout"])] == ["dropout"]
    with pytest.raises(ConfigError, match=r"unknown variant 'dropuot' \(did you mean 'dropout'\?\)"):
        plan_runs(exp, only=["dropuot"])
    with pytest.raises(ConfigError, match="--repeat: expected a number of seeds >= 1"):
        plan_runs(exp, repeat=0)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_plans_valid_configs_full_and_quick(name):
    exp = load_experiment(name)
    assert exp.spec.description
    for quick in (False, True):
        plans = plan_runs(exp, quick=quick, repeat=1)  # one folder per variant (presets may set repeat)
        assert [p.folder for p in plans] == [v.name for v in exp.spec.variants]


def test_the_cifar10_exercise_preset_is_the_exercise():
    plans = {p.folder: p.config for p in plan_runs(load_experiment("cifar10-exercise"))}
    assert list(plans) == ["baseline", "bn", "selu", "alpha-dropout", "one-cycle"]
    dense = [layer for layer in plans["baseline"].model.layers if layer.type == "repeat"][0]
    assert dense.count == 20 and dense.layers[0].units == 100 and dense.layers[0].activation.name == "elu"
    bn = plans["bn"].model.layers
    assert bn[1].type == "batch_norm"  # after the input
    assert [x.type for x in bn[2].layers] == ["dense", "batch_norm", "activation"] and not bn[2].layers[
        0
    ].use_bias
    assert plans["selu"].data.scaling == "standardize"
    assert plans["alpha-dropout"].model.layers[-2].type == "alpha_dropout"
    one = plans["one-cycle"].train
    assert one.schedule.name == "one_cycle" and one.batch_size == 128 and one.epochs == 15
    assert one.early_stopping is None
    quick = {p.folder: p.config for p in plan_runs(load_experiment("cifar10-exercise"), quick=True)}
    assert quick["baseline"].data.limit_train == 10_000 and quick["one-cycle"].train.epochs == 10
    assert quick["one-cycle"].train.early_stopping is None  # unset after [quick] too


def test_presets_command_lists_one_line_each(capsys):
    assert main(["presets"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    for name in preset_names():
        assert sum(line.startswith(name) for line in lines) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["variants"].append({"name": "plain"}), r"variants: the name 'plain' is used twice"),
        (
            lambda d: d["variants"][1].update(compare_to="plian"),
            r"compare_to: unknown variant 'plian' \(did you mean 'plain'",
        ),
        (lambda d: d["variants"][0].update(name="a b"), r"variants\[0\].name: String should match pattern"),
        (
            lambda d: d["base"].pop("model"),
            r"\[base\] must be a complete config; it has no \[base.model\] table",
        ),
        (lambda d: d.update(colour="red"), r"colour: unknown key 'colour'"),
        (
            lambda d: d["variants"][1]["set"]["model"]["layers"][1].update(units=-1),
            r"variant 'dropout' \(\[base\] with its set\) is invalid:\n  model.layers\[1\].units: Input should be greater than 0",
        ),
    ],
)
def test_bad_experiment_files_name_the_key(tmp_path, blob_npz, change, message):
    data = tiny_experiment(blob_npz)
    change(data)
    path = write_experiment(tmp_path / "bad.toml", data)
    with pytest.raises(ConfigError, match=message):
        plan_runs(load_experiment(path))


def test_unknown_presets_and_files(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown preset 'cifar10-exercize' \(did you mean 'cifar10-exercise'\?\)"
    ):
        load_experiment("cifar10-exercize")
    with pytest.raises(ConfigError, match=r"no such experiment file"):
        load_experiment(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_experiment(tmp_path / "broken.toml")
