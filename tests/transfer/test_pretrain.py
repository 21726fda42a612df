"""Autoencoder pretraining: the decoder mirrors the encoder, the reconstruction loss falls, and the encoder's
weights are the classifier's lower layers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tests.transfer.conftest import SOFTMAX3, config_dict
from trainwell.config import validate_config
from trainwell.data import load_dataset
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.runs import run_training
from trainwell.train.checkpoint import load_weights
from trainwell.transfer.pretrain import autoencoder, decoder_spec, encoder_layers, pretrain_autoencoder

PRETRAIN = {
    "method": "autoencoder",
    "layers": 2,
    "epochs": 4,
    "optimizer": {"name": "adam", "learning_rate": 3e-3},
}


def test_the_decoder_mirrors_the_encoder():
    spec = validate_config(
        {
            "data": {"dataset": "npz", "path": "x.npz"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 30, "activation": "selu"},
                    {"type": "dropout", "rate": 0.1},
                    {"type": "dense", "units": 10, "activation": "relu"},
                    {"type": "dense", "units": 3, "activation": "softmax"},
                ]
            },
        }
    ).model
    assert encoder_layers(spec, 1) == 3 and encoder_layers(spec, 2) == 4  # flatten, dense, dropout | dense
    layers = decoder_spec(spec, 2, 48).layers
    assert [(d.units, d.activation.name) for d in layers] == [(30, "relu"), (48, "linear")]
    with pytest.raises(
        ConfigError, match=r"pretrain\.layers: 3 dense layers for the encoder, but the model has 3"
    ):
        encoder_layers(spec, 3)


def test_pretraining_lowers_the_reconstruction_error_and_trains_the_classifiers_own_layers(blob_npz):
    config = validate_config(config_dict(blob_npz, SOFTMAX3, data={"scaling": "none"}, pretrain=PRETRAIN))
    dataset = load_dataset(config.data)
    torch.manual_seed(0)
    model = build_model(config.model, dataset.input_shape)
    before = copy.deepcopy(model)

    # The reconstruction error before training, computed here by hand: the same seeded decoder, then
    # mean((x̂ − x)²) over every pixel of the validation images.
    torch.manual_seed(config.train.seed)
    ae = autoencoder(copy.deepcopy(model), config.model, 2, dataset.input_shape).eval()
    x = torch.as_tensor(dataset.x_valid)
    with torch.no_grad():
        expected = float(((ae(x) - x.reshape(len(x), -1)) ** 2).mean())

    record = pretrain_autoencoder(config, model, dataset)
    assert record["val_loss_before"] == pytest.approx(expected, rel=1e-5)
    assert record["val_loss_after"] < 0.5 * record["val_loss_before"]
    losses = [row["loss"] for row in record["history"]]
    assert (
        losses[-1] < losses[0] and np.isnan([row.get("accuracy", np.nan) for row in record["history"]]).all()
    )
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    # the encoder (dense_1, BN, dense_2) trained in place; the output layer did not
    assert changed == {
        k for k in model.state_dict() if k.startswith(("dense_1.", "batch_normalization_1.", "dense_2."))
    }
    assert record["layers"] == ["flatten_1", "dense_1", "batch_normalization_1", "dense_2"]


def test_a_run_with_pretrain_starts_from_the_pretrained_encoder(tmp_path, blob_npz):
    # Frozen for the whole run, the classifier's encoder must be exactly what pretraining produced.
    config = validate_config(
        config_dict(blob_npz, SOFTMAX3, pretrain=PRETRAIN, phases=[{"epochs": 2, "freeze": "reused"}])
    )
    dataset = load_dataset(config.data)
    torch.manual_seed(config.train.seed)  # as the run builds its model
    model = build_model(config.model, dataset.input_shape)
    pretrain_autoencoder(config, model, dataset)
    expected = model.state_dict()

    result = run_training(config, out=tmp_path / "run", progress=False)
    saved = load_weights(result.run_dir / "model.pt")
    encoder = [k for k in saved if k.startswith(("dense_1.", "batch_normalization_1.", "dense_2."))]
    assert encoder and all(torch.equal(saved[k], expected[k]) for k in encoder)
    record = json.loads((result.run_dir / "transfer.json").read_text())
    assert record["method"] == "autoencoder" and record["examples"] == len(dataset.x_train)


def test_pretrain_data_all_ignores_the_label_limit(tmp_path, blob_npz):
    config = validate_config(
        config_dict(blob_npz, SOFTMAX3, data={"limit_train": 40}, pretrain=PRETRAIN | {"epochs": 1})
    )
    dataset = load_dataset(config.data)
    torch.manual_seed(0)
    record = pretrain_autoencoder(config, build_model(config.model, dataset.input_shape), dataset)
    assert len(dataset.x_train) == 40 and record["examples"] == 400 - 50  # every image outside validation


def test_pretrain_and_from_together_are_refused(blob_npz, tmp_path):
    with pytest.raises(
        ConfigError, match=r"pretrain: the lower layers come either from model\.from or from pretrain"
    ):
        validate_config(config_dict(blob_npz, SOFTMAX3, pretrain=PRETRAIN, model={"from": str(tmp_path)}))


def test_mse_is_refused_for_a_classifier_and_pretraining_needs_a_learning_rate(tmp_path, blob_npz):
    from trainwell.runs import run_training

    linear = {"type": "dense", "units": 3}
    with pytest.raises(
        ConfigError, match=r"train\.loss: mse is the reconstruction loss of autoencoder pretraining"
    ):
        run_training(
            validate_config(config_dict(blob_npz, linear, loss="mse")), out=tmp_path / "a", progress=False
        )
    auto = PRETRAIN | {"optimizer": {"name": "adam", "learning_rate": "auto"}}
    config = validate_config(config_dict(blob_npz, SOFTMAX3, pretrain=auto))
    with pytest.raises(ConfigError, match=r"pretrain\.optimizer: give a learning rate for pretraining"):
        pretrain_autoencoder(config, build_model(config.model, (4, 4, 3)), load_dataset(config.data))


def test_an_encoder_without_an_output_layer_left_is_a_config_error(blob_npz):
    with pytest.raises(
        ConfigError, match=r"pretrain\.layers: 3 dense layers for the encoder, but the model has 3"
    ):
        validate_config(config_dict(blob_npz, SOFTMAX3, pretrain=PRETRAIN | {"layers": 3}))
