"""model.from / model.reuse: layers copied from a finished run, the source untouched, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.transfer.conftest import BINARY, SIGMOID, SOFTMAX3, config_dict
from trainwell.config import validate_config
from trainwell.errors import ConfigError
from trainwell.runs import run_training
from trainwell.train.checkpoint import load_weights

REUSED = ("dense_1.", "batch_normalization_1.", "dense_2.")  # flatten_1 has no weights


def digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def test_frozen_reused_layers_are_bit_identical_and_the_source_is_untouched(source_run, tmp_path, blob_npz):
    before = digest(source_run)
    config = validate_config(
        config_dict(
            blob_npz,
            SIGMOID,
            data=BINARY,
            model={"from": str(source_run)},
            loss="binary_crossentropy",
            phases=[{"epochs": 3, "freeze": "reused"}],
        )
    )
    result = run_training(config, out=tmp_path / "b", progress=False)
    assert digest(source_run) == before  # not one byte of the source run changed
    src, new = load_weights(source_run / "model.pt"), load_weights(result.run_dir / "model.pt")
    reused = [k for k in src if k.startswith(REUSED)]
    # weights, biases, γ, β and BN's moving mean, variance and batch count (inference mode): all unchanged
    assert {k.rsplit(".", 1)[-1] for k in reused} >= {
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }
    for k in reused:
        assert torch.equal(src[k], new[k]), k
    assert new["dense_3.linear.weight"].shape == (1, 8)  # the new output layer
    record = json.loads((result.run_dir / "transfer.json").read_text())
    # 48 inputs (4x4x3) → 16: 48·16 + 16; BN: γ and β, 2·16; 16 → 8: 16·8 + 8
    assert record["parameters"] == 48 * 16 + 16 + 2 * 16 + 16 * 8 + 8
    assert record["layers"] == ["flatten_1", "dense_1", "batch_normalization_1", "dense_2"]
    assert config.train.epochs == 3 and result.metrics["epochs_run"] == 3


def test_without_freezing_the_copies_train_and_reuse_counts_lower_layers(source_run, tmp_path, blob_npz):
    config = validate_config(config_dict(blob_npz, SOFTMAX3, model={"from": str(source_run), "reuse": 2}))
    result = run_training(config, out=tmp_path / "b", progress=False)
    src, new = load_weights(source_run / "model.pt"), load_weights(result.run_dir / "model.pt")
    assert not torch.equal(src["dense_1.linear.weight"], new["dense_1.linear.weight"])  # copied, then trained
    assert json.loads((result.run_dir / "transfer.json").read_text())["layers"] == ["flatten_1", "dense_1"]


def test_copied_weights_start_from_the_source(source_run, blob_npz):
    from trainwell.nn.build import build_model
    from trainwell.transfer import reuse_into

    spec = validate_config(config_dict(blob_npz, SOFTMAX3, model={"from": str(source_run), "reuse": 3})).model
    model = build_model(spec, (4, 4, 3))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    record = reuse_into(spec, model)
    src = load_weights(source_run / "model.pt")
    for k, v in model.state_dict().items():
        expected = src[k] if k.startswith(("dense_1.", "batch_normalization_1.")) else fresh[k]
        assert torch.equal(v, expected), k
    assert record["parameters"] == 48 * 16 + 16 + 2 * 16


@pytest.mark.parametrize(
    "model, message",
    [
        ({"from": "{tmp}/nowhere"}, r"model\.from: .*nowhere: no such run folder"),
        ({"from": "{tmp}"}, r"model\.from: .* is not a run folder"),
        ({"from": "@model-a"}, r"model\.from: '@model-a' names a variant of an experiment"),
        ({"from": "{src}", "reuse": 9}, r"model\.reuse: 9 layers, but the model has 5"),
    ],
)
def test_bad_sources_are_config_errors_naming_the_key(source_run, tmp_path, blob_npz, model, message):
    model = {k: v.format(tmp=tmp_path, src=source_run) if isinstance(v, str) else v for k, v in model.items()}
    with pytest.raises(ConfigError, match=message):
        run_training(
            validate_config(config_dict(blob_npz, SOFTMAX3, model=model)), out=tmp_path / "b", progress=False
        )
    assert not (tmp_path / "b").exists()  # nothing created


def test_incompatible_shapes_name_the_layer_and_the_fix(source_run, tmp_path, blob_npz):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 20}, {"type": "batch_norm"}, SOFTMAX3]
    config = validate_config(
        config_dict(blob_npz, SOFTMAX3, model={"from": str(source_run), "layers": layers})
    )
    with pytest.raises(
        ConfigError,
        match=r"model\.from: layer 2 of the run .* \(dense_1: Dense, linear\.weight "
        r"\[16, 48\].*does not fit layer 2 of model\.layers .*\[20, 48\].*"
        r"model\.reuse = 1",
    ):
        run_training(config, out=tmp_path / "b", progress=False)


def test_an_unfinished_source_is_refused(source_run, tmp_path, blob_npz):
    (source_run / "model.pt").unlink()
    with pytest.raises(ConfigError, match=r"model\.from: the run .* has not finished \(no model\.pt\)"):
        run_training(
            validate_config(config_dict(blob_npz, SOFTMAX3, model={"from": str(source_run)})),
            out=tmp_path / "b",
            progress=False,
        )


def test_from_round_trips_through_the_run_config(source_run, tmp_path, blob_npz):
    from trainwell.runs import load_run_config

    config = validate_config(config_dict(blob_npz, SOFTMAX3, model={"from": str(source_run)}))
    result = run_training(config, out=tmp_path / "b", progress=False)
    text = (result.run_dir / "config.toml").read_text()
    assert f'from = "{source_run}"' in text
    assert load_run_config(result.run_dir) == config
