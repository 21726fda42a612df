"""Config validation: every error names the key path, the bad value and what is allowed."""

from __future__ import annotations

import copy
import tomllib

import pytest

from trainwell.config import (
    Config,
    config_to_toml,
    load_config,
    merge,
    parse_override,
    validate_config,
    with_overrides,
)
from trainwell.errors import ConfigError

BASE = {
    "data": {"dataset": "cifar10", "validation_size": 5000},
    "model": {"layers": [
        {"type": "flatten"},
        {"type": "repeat", "count": 3, "layers": [
            {"type": "dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"}]},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]},
    "train": {"optimizer": {"name": "nadam", "learning_rate": 5e-5}, "epochs": 100,
              "early_stopping": {"patience": 20, "restore_best_weights": True}},
}


def invalid(mutate) -> str:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        validate_config(data, source="cfg.toml")
    return str(info.value)


def test_valid_config_fills_keras_defaults():
    config = validate_config(BASE)
    dense = config.model.layers[1].layers[0]
    assert dense.activation.name == "elu" and dense.kernel_initializer.name == "he_normal"
    assert config.model.layers[2].kernel_initializer.name == "glorot_uniform"  # Keras's Dense default
    assert config.train.optimizer.epsilon == 1e-7 and config.train.optimizer.beta_1 == 0.9
    assert config.train.batch_size == 32


def test_unknown_activation_names_path_closest_and_all_valid():
    msg = invalid(lambda d: d["model"]["layers"][1]["layers"][0].update(activation="eluu"))
    assert "cfg.toml" in msg
    assert "model.layers[1].layers[0].activation" in msg
    assert "'eluu'" in msg and "did you mean 'elu'" in msg
    assert "leaky_relu" in msg and "selu" in msg and "tanh" in msg


def test_unknown_initializer_is_rejected_with_list():
    msg = invalid(lambda d: d["model"]["layers"][2].update(kernel_initializer="he_normall"))
    assert "model.layers[2].kernel_initializer" in msg and "did you mean 'he_normal'" in msg
    assert "lecun_normal" in msg and "variance_scaling" in msg


def test_dropout_rate_out_of_range():
    msg = invalid(lambda d: d["model"]["layers"].insert(1, {"type": "dropout", "rate": 1.5}))
    assert "model.layers[1].rate" in msg and "less than 1" in msg and "1.5" in msg


def test_negative_learning_rate():
    msg = invalid(lambda d: d["train"]["optimizer"].update(learning_rate=-0.1))
    assert "train.optimizer.learning_rate" in msg and "> 0" in msg


def test_unknown_key_and_wrong_type():
    assert "train.epocs: unknown key 'epocs'" in invalid(lambda d: d["train"].update(epocs=3))
    msg = invalid(lambda d: d["train"].update(batch_size="big"))
    assert "train.batch_size" in msg and "'big'" in msg


def test_parameter_of_a_table_initializer_is_located_without_the_union_tag():
    msg = invalid(lambda d: d["model"]["layers"][2].update(
        kernel_initializer={"name": "variance_scaling", "scale": -2.0}))
    assert "model.layers[2].kernel_initializer.scale" in msg and "greater than 0" in msg


def test_activation_layer_shorthand_is_located_at_the_layer():
    msg = invalid(lambda d: d["model"]["layers"].insert(1, {"type": "leaky_relu", "alpha": -1}))
    assert "model.layers[1].alpha" in msg


def test_loss_needs_matching_output_activation():
    msg = invalid(lambda d: d["model"]["layers"][2].update(activation="linear"))
    assert "sparse_categorical_crossentropy" in msg and 'activation = "softmax"' in msg


def test_restore_best_weights_on_val_loss_needs_a_validation_set():
    msg = invalid(lambda d: d["data"].update(validation_size=0))
    assert "validation_size" in msg and "val_loss" in msg


def test_only_one_clipping_mode():
    msg = invalid(lambda d: d["train"]["optimizer"].update(clipnorm=1.0, clipvalue=0.5))
    assert "at most one of clipvalue, clipnorm, global_clipnorm" in msg


@pytest.mark.parametrize(("text", "path", "value"), [
    ("train.epochs=3", ["train", "epochs"], 3),
    ("train.optimizer.learning_rate=1e-3", ["train", "optimizer", "learning_rate"], 1e-3),
    ("train.optimizer.name=adam", ["train", "optimizer", "name"], "adam"),
    ('name="my run"', ["name"], "my run"),
    ("data.limit_train=5000", ["data", "limit_train"], 5000),
    ("x.y=[1, 2]", ["x", "y"], [1, 2]),
    ("train.early_stopping={ patience = 3 }", ["train", "early_stopping"], {"patience": 3}),
    ("model.layers.1.units=50", ["model", "layers", 1, "units"], 50),
    ("flag=true", ["flag"], True),
])
def test_parse_override_reads_toml_values(text, path, value):
    assert parse_override(text) == (path, value)


def test_bad_override_says_how_to_write_it():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_override("name=a b")


def test_overrides_merge_tables_and_replace_on_a_new_name():
    data = with_overrides(BASE, ["train.early_stopping={ patience = 3 }", "model.layers.2.units=7"])
    assert data["train"]["early_stopping"] == {"patience": 3, "restore_best_weights": True}
    assert data["model"]["layers"][2]["units"] == 7
    assert BASE["model"]["layers"][2]["units"] == 10  # the original is untouched
    assert merge({"name": "nadam", "beta_1": 0.9}, {"name": "sgd", "momentum": 0.9}) == {"name": "sgd", "momentum": 0.9}
    assert merge("he_normal", {"name": "he_normal"}) == {"name": "he_normal"}


def test_override_into_missing_list_item_is_an_error():
    with pytest.raises(ConfigError, match="no item 9"):
        with_overrides(BASE, ["model.layers.9.units=3"])


def test_resolved_config_round_trips_through_toml():
    config = validate_config(BASE)
    again = Config.model_validate(tomllib.loads(config_to_toml(config)))
    assert again == config


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
