"""Bad configs: every problem is reported at once, each with its key path and the fix; exit code 2; nothing is
created (no run folder, no cache entry, no file anywhere under the test's folder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import config_dict, files_under, run_cli, write_config
from trainwell.cli import main


@pytest.fixture
def snapshot(tmp_path: Path):
    """A function telling what was created under ``tmp_path`` since the fixture ran (ignoring ``keep``)."""
    before = set(files_under(tmp_path))

    def created(*keep: Path) -> list[str]:
        kept = {str(p.relative_to(tmp_path)) for p in keep}
        return sorted(set(files_under(tmp_path)) - before - kept)

    return created


def test_every_field_error_at_once_exit_2_nothing_created(tmp_path, npz, snapshot):
    data = config_dict(npz)
    data["data"]["scaling"] = "unitt"
    data["model"]["layers"][1].update(activation="eluu", units=-5)
    data["model"]["layers"][2]["rate"] = 1.5
    data["train"].update(batch_size=0, epochs="ten", optimzer={"name": "sgd"})
    data["train"]["optimizer"].update(learning_rate=-1, beta_1=2)
    config = write_config(tmp_path / "bad.toml", data)

    code, out, err = run_cli(["train", str(config), "--runs", str(tmp_path / "runs")])  # a real process
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{config} is invalid" in err
    for expected in (
        "data.scaling: Input should be 'unit', 'standardize' or 'none' (got 'unitt')",
        "model.layers[1].units: Input should be greater than 0 (got -5)",
        "model.layers[1].activation: unknown activation 'eluu' (did you mean 'elu'?)",
        "model.layers[2].rate: Input should be less than 1 (got 1.5)",
        "train.optimizer.learning_rate: learning_rate must be > 0",
        "train.optimizer.beta_1: Input should be less than 1 (got 2)",
        "train.batch_size: Input should be greater than or equal to 1 (got 0)",
        "train.epochs: Input should be a valid integer",
        "train.optimzer: unknown key 'optimzer'",
    ):
        assert expected in err
    assert snapshot(config) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # restore_best_weights (monitoring val_loss, the default) without a validation set
        (
            lambda d: d["data"].update(validation_size=0),
            'train.early_stopping.monitor: "val_loss" needs a validation set, but data.validation_size is 0',
        ),
        # a fraction of 2,600 examples that rounds to none: known only once the data is read
        (
            lambda d: d["data"].update(validation_size=0.0001),
            'train.early_stopping.monitor: "val_loss" needs a validation set, but '
            "data.validation_size = 0.0001 gives no validation examples",
        ),
        (
            lambda d: d["model"]["layers"].pop(0),
            "model.layers: the model's output for one example has shape (6, 6, 3), not (3,)",
        ),
        (
            lambda d: d["model"]["layers"][-1].update(units=5),
            "model.layers: the last dense layer has 5 units but npz has 3 classes; set units = 3",
        ),
        (
            lambda d: d["train"].update(loss="binary_crossentropy"),
            'train.loss: binary_crossentropy needs a model whose last layer has activation "sigmoid"',
        ),
        (
            lambda d: d["data"].update(validation_size=1.5),
            "data.validation_size: a float must be a fraction in (0, 1), got 1.5",
        ),
        (
            lambda d: d["data"].update(validation_size=2600),
            "data.validation_size: 2600 leaves no training examples out of 2,600",
        ),
    ],
)
def test_cross_field_rules_exit_2_nothing_created(tmp_path, npz, snapshot, capsys, change, message):
    data = config_dict(npz)
    change(data)
    config = write_config(tmp_path / "bad.toml", data)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(config) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{dir}/missing.toml"], "missing.toml: no such config file"),
        (["train", "{dir}/syntax.toml"], "syntax.toml: not valid TOML"),
        (
            ["train", "{dir}/good.toml", "--set", "train.epochs"],
            "--set 'train.epochs': expected dotted.key=value",
        ),
        (["train", "{dir}/good.toml", "--set", "model.layers.9.units=3"], "no item 9 in a list of 4"),
        (
            ["train", "--resume", "{dir}/run", "--set", "train.epochs=5"],
            "--resume continues a run with its own config",
        ),
        (["train", "--resume", "{dir}"], "not a run folder (no config.toml)"),
        (["train"], "give a CONFIG file to train, or --resume RUN_DIR"),
    ],
)
def test_bad_command_lines_exit_2_nothing_created(tmp_path, npz, snapshot, capsys, args, message):
    good = write_config(tmp_path / "good.toml", config_dict(npz))
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[train\nepochs = 3\n")
    before = snapshot(good, syntax)
    assert main([a.format(dir=tmp_path) for a in args]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(good, syntax) == before == []


def test_a_selu_net_that_cannot_self_normalize_is_warned_about_not_refused(tmp_path, npz, capsys):
    data = config_dict(npz, epochs=1)
    data["model"]["layers"][1].update(activation="selu", kernel_initializer="he_normal")
    config = write_config(tmp_path / "selu.toml", data)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "this SELU net is not self-normalizing" in err and "model.layers[1].kernel_initializer" in err
