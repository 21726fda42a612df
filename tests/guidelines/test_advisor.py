"""The advisor's rules, each tested both ways: a config that triggers it and one that does not."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from trainwell.config import validate_config
from trainwell.errors import ConfigError
from trainwell.guidelines import advisor, sources
from trainwell.guidelines.advisor import RULES, advise, count_by_severity
from trainwell.guidelines.thresholds import DEEP_NET_HIDDEN_LAYERS, HIGH_BN_MOMENTUM, HIGH_OPTIMIZER_MOMENTUM
from trainwell.nn.build import build_model
from trainwell.nn.layers import BatchNorm
from trainwell.train.loop import evaluate


def hidden(n: int, **dense: Any) -> list[dict]:
    layer = {"type": "dense", "units": 8, "activation": "elu", "kernel_initializer": "he_normal"} | dense
    return [{"type": "repeat", "count": n, "layers": [layer]}]


def bn_block(n: int, activation: str = "elu", **bn: Any) -> list[dict]:
    return [
        {
            "type": "repeat",
            "count": n,
            "layers": [
                {"type": "dense", "units": 8, "use_bias": False, "kernel_initializer": "he_normal"},
                {"type": "batch_norm", **bn},
                {"type": activation},
            ],
        }
    ]


def selu(n: int = 3, **dense: Any) -> list[dict]:
    return hidden(n, **({"activation": "selu", "kernel_initializer": "lecun_normal"} | dense))


OUTPUT = {"type": "dense", "units": 10, "activation": "softmax"}
PRUNING = {"final_sparsity": 0.9, "end_step": 1000}


def base() -> dict[str, Any]:
    """A config that follows the guidelines: no rule fires on it."""
    return {
        "data": {"dataset": "cifar10", "validation_size": 5000, "scaling": "standardize"},
        "model": {"layers": [{"type": "flatten"}, *hidden(3), OUTPUT]},
        "train": {
            "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True},
            "schedule": {"name": "exponential", "s": 20},
            "early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best_weights": True},
        },
    }


def with_(changes: dict[str, Any]) -> dict[str, Any]:
    """``base()`` with ``changes`` (``"train.optimizer"`` → value) set; ``None`` removes the key."""
    data = base()
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return data


def layers(*stack: Any) -> dict[str, Any]:
    return with_({"model.layers": [{"type": "flatten"}, *stack, OUTPUT]})


def findings_of(rule: str, data: dict[str, Any]) -> list[advisor.Finding]:
    return [f for f in advise(validate_config(data)) if f.rule == rule]


# One config per rule that triggers it, and one close to it that does not. The test below checks that every
# rule of RULES is here, so a new rule cannot go untested.
TRIGGERS: dict[str, dict[str, Any]] = {
    "inputs_not_scaled": with_({"data.scaling": "none"}),
    "not_self_normalizing": layers(*selu(3), {"type": "batch_norm"}),
    "deep_net_without_batch_norm": layers(*hidden(DEEP_NET_HIDDEN_LAYERS, activation="relu")),
    "saturating_hidden_activation": layers(
        *hidden(2, activation="sigmoid", kernel_initializer="glorot_uniform")
    ),
    "initializer_mismatch": layers(*hidden(2, activation="relu", kernel_initializer="glorot_uniform")),
    "alpha_dropout_without_selu": layers(*hidden(2), {"type": "alpha_dropout", "rate": 0.1}),
    "bias_before_batch_norm": layers(
        {"type": "dense", "units": 8, "kernel_initializer": "he_normal"},
        {"type": "batch_norm"},
        {"type": "elu"},
    ),
    "batch_norm_momentum_too_high": with_(
        {
            "model.layers": [{"type": "flatten"}, *bn_block(2, momentum=0.999), OUTPUT],
            "data.limit_train": 2000,
        }
    ),
    "pruning_breaks_self_normalization": with_(
        {"model.layers": [{"type": "flatten"}, *selu(3), OUTPUT], "train.pruning": PRUNING}
    ),
    "optimizer_momentum_too_high": with_({"train.optimizer": {"name": "sgd", "momentum": 0.999}}),
    "adagrad": with_({"train.optimizer": {"name": "adagrad"}}),
    "adaptive_optimizer": with_({"train.optimizer": {"name": "nadam"}}),
    "fixed_learning_rate": with_({"train.schedule": None}),
    "no_early_stopping": with_({"train.early_stopping": None}),
    "early_stopping_on_training_data": with_(
        {"train.early_stopping": {"monitor": "loss", "restore_best_weights": True}}
    ),
    "early_stopping_without_restore": with_({"train.early_stopping": {"monitor": "val_loss", "patience": 5}}),
}
CLEAN: dict[str, dict[str, Any]] = {
    "inputs_not_scaled": with_({"data.scaling": "unit"}),
    "not_self_normalizing": layers(*selu(3), {"type": "alpha_dropout", "rate": 0.1}),
    "deep_net_without_batch_norm": layers(*bn_block(DEEP_NET_HIDDEN_LAYERS, activation="relu")),
    "saturating_hidden_activation": layers(*hidden(2, activation="elu")),
    "initializer_mismatch": layers(*hidden(2, activation="relu", kernel_initializer="he_uniform")),
    "alpha_dropout_without_selu": layers(*hidden(2), {"type": "dropout", "rate": 0.1}),
    "bias_before_batch_norm": layers(
        {"type": "dense", "units": 8, "use_bias": False, "kernel_initializer": "he_normal"},
        {"type": "batch_norm"},
        {"type": "elu"},
    ),
    "batch_norm_momentum_too_high": with_(
        {
            "model.layers": [{"type": "flatten"}, *bn_block(2, momentum=0.99), OUTPUT],
            "data.limit_train": 2000,  # 63 steps an epoch at batch 32: 5 epochs outlast the 100-step horizon
            "train.epochs": 5,
        }
    ),
    "pruning_breaks_self_normalization": with_({"train.pruning": PRUNING}),
    "optimizer_momentum_too_high": with_({"train.optimizer": {"name": "sgd", "momentum": 0.99}}),
    "adagrad": with_({"train.optimizer": {"name": "rmsprop"}}),
    "adaptive_optimizer": with_({"train.optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}}),
    "fixed_learning_rate": with_({"train.schedule": {"name": "one_cycle", "max_lr": 0.05}}),
    "no_early_stopping": base(),
    "early_stopping_on_training_data": with_(
        {"train.early_stopping": {"monitor": "val_accuracy", "restore_best_weights": True}}
    ),
    "early_stopping_without_restore": with_(
        {"train.early_stopping": {"monitor": "val_loss", "restore_best_weights": True}}
    ),
}


def test_every_rule_is_tested_both_ways():
    names = {rule.name for rule in RULES}
    assert set(TRIGGERS) == names
    assert set(CLEAN) == names
    assert len(names) == len(RULES)  # unique names


def test_the_base_config_has_no_findings():
    assert advise(validate_config(base())) == []


@pytest.mark.parametrize("rule", sorted(TRIGGERS))
def test_rule_triggers(rule):
    found = findings_of(rule, TRIGGERS[rule])
    assert found, f"{rule} did not fire"
    for f in found:
        assert f.severity in advisor.SEVERITIES
        assert f.guideline.startswith(sources.CHAPTER + ": ")
        assert f.message and f.fix and f.where


@pytest.mark.parametrize("rule", sorted(CLEAN))
def test_rule_stays_quiet(rule):
    assert findings_of(rule, CLEAN[rule]) == []


def test_every_citation_names_a_place_in_the_chapter():
    places = {v for k, v in vars(sources).items() if k.isupper() and isinstance(v, str) and k != "CHAPTER"}
    for data in TRIGGERS.values():
        for f in advise(validate_config(data)):
            cited = f.guideline.removeprefix(sources.CHAPTER + ": ").split("; ")
            for c in cited:
                assert any(c == p or c.startswith(p + " (") for p in places), c


# ----------------------------------------------------------------------------------------- rule details


def test_unscaled_inputs_of_a_selu_net_are_reported_once_as_a_self_normalization_condition():
    data = layers(*selu(3))
    data["data"]["scaling"] = "none"
    found = advise(validate_config(data))
    assert [f.rule for f in found if f.where == "data.scaling"] == ["not_self_normalizing"]
    assert "standardize" in next(f.fix for f in found if f.where == "data.scaling")


@pytest.mark.parametrize(
    ("stack", "where", "cause"),
    [
        ([*selu(3), {"type": "batch_norm"}], "model.layers[2]", "Batch Normalization"),
        ([*selu(3), {"type": "dropout", "rate": 0.1}], "model.layers[2]", "plain dropout"),
        (selu(3, kernel_initializer="he_normal"), "model.layers[1].layers[0].kernel_initializer", "LeCun"),
        (selu(3, kernel_regularizer={"l2": 1e-4}), "model.layers[1].layers[0].kernel_regularizer", "l1/l2"),
        (selu(3, kernel_regularizer={"l1": 1e-4}), "model.layers[1].layers[0].kernel_regularizer", "l1/l2"),
    ],
)
def test_selu_conditions_name_the_layer_and_the_cause(stack, where, cause):
    found = findings_of("not_self_normalizing", layers(*stack))
    assert [f.where for f in found] == [where]
    assert cause in found[0].message and found[0].severity == "warning"
    assert sources.SELF_NORMALIZING_TABLE in found[0].guideline


def test_opting_out_of_the_selu_check_keeps_the_advice_as_info():
    data = layers(*selu(3), {"type": "batch_norm"})
    data["model"]["check_self_normalization"] = False
    found = findings_of("not_self_normalizing", data)
    assert [f.severity for f in found] == ["info"] and "opted out" in found[0].message


def test_depth_threshold_is_where_deep_begins():
    shallow = layers(*hidden(DEEP_NET_HIDDEN_LAYERS - 1))
    deep = layers(*hidden(DEEP_NET_HIDDEN_LAYERS))
    assert findings_of("deep_net_without_batch_norm", shallow) == []
    assert len(findings_of("deep_net_without_batch_norm", deep)) == 1
    # the threshold is a keyword argument
    assert advisor.deep_net_without_batch_norm(validate_config(shallow), deep_from=DEEP_NET_HIDDEN_LAYERS - 1)


@pytest.mark.parametrize(
    ("activation", "init", "risk"),
    [
        ("sigmoid", "glorot_uniform", "vanish"),
        ("relu", "he_normal", "ReLUs can die"),
        ("elu", "he_normal", "come back during training"),
    ],
)
def test_deep_net_without_bn_explains_the_risk_of_its_activation(activation, init, risk):
    found = findings_of(
        "deep_net_without_batch_norm",
        layers(*hidden(DEEP_NET_HIDDEN_LAYERS, activation=activation, kernel_initializer=init)),
    )
    assert risk in found[0].message and found[0].severity == "warning"
    assert sources.DEFAULT_TABLE in found[0].guideline


def test_a_deep_selu_net_needs_no_batch_norm():
    assert findings_of("deep_net_without_batch_norm", layers(*selu(DEEP_NET_HIDDEN_LAYERS + 10))) == []


def test_an_activation_layer_after_a_linear_dense_layer_is_its_activation():
    # Dense(linear) -> Activation("sigmoid"): the hidden activation is sigmoid, reported where it is set
    stack = [{"type": "dense", "units": 8}, {"type": "sigmoid"}]
    found = findings_of("saturating_hidden_activation", layers(*stack))
    assert [f.where for f in found] == ["model.layers[2]"]


@pytest.mark.parametrize(
    ("activation", "init", "fires"),
    [
        ("relu", "glorot_uniform", True),
        ("elu", "lecun_normal", True),
        ("leaky_relu", {"name": "variance_scaling", "scale": 1.0, "mode": "fan_avg"}, True),
        (
            "relu",
            {"name": "variance_scaling", "scale": 2.0, "mode": "fan_in", "distribution": "uniform"},
            False,
        ),
        ("tanh", "he_normal", True),
        ("tanh", "glorot_normal", False),
        ("tanh", "lecun_uniform", False),
        ("relu", "orthogonal", False),  # not a variance-scaling family: not judged
    ],
)
def test_initializer_matches_activation_per_table_11_1(activation, init, fires):
    found = findings_of(
        "initializer_mismatch", layers(*hidden(2, activation=activation, kernel_initializer=init))
    )
    assert bool(found) is fires
    if fires:
        assert found[0].where == "model.layers[1].layers[0].kernel_initializer"
        assert sources.INIT_TABLE in found[0].guideline


def test_initializer_mismatch_is_a_warning_only_in_a_deep_net():
    shallow = findings_of(
        "initializer_mismatch",
        layers(*bn_block(1, "relu"), *hidden(1, activation="relu", kernel_initializer="glorot_uniform")),
    )
    deep = findings_of(
        "initializer_mismatch",
        layers(
            *bn_block(DEEP_NET_HIDDEN_LAYERS, "relu"),
            *hidden(1, activation="relu", kernel_initializer="glorot_uniform"),
        ),
    )
    assert [f.severity for f in shallow] == ["info"] and [f.severity for f in deep] == ["warning"]


def test_the_output_layer_is_not_a_hidden_layer():
    # a softmax output with He init is not judged (Table 11-1's argument is about many layers)
    stack = [
        *hidden(2),
        {"type": "dense", "units": 10, "activation": "softmax", "kernel_initializer": "he_normal"},
    ]
    data = with_({"model.layers": [{"type": "flatten"}, *stack]})
    assert findings_of("initializer_mismatch", data) == []


def test_a_dense_layer_with_an_activation_before_bn_keeps_its_bias():
    # BN after the activation (the chapter's first BN example): the bias acts before the non-linearity
    stack = [
        {"type": "dense", "units": 8, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_norm"},
    ]
    assert findings_of("bias_before_batch_norm", layers(*stack)) == []


def test_a_repeated_redundant_bias_is_reported_once_at_its_spec():
    found = findings_of(
        "bias_before_batch_norm",
        layers(
            {
                "type": "repeat",
                "count": 5,
                "layers": [
                    {"type": "dense", "units": 8, "kernel_initializer": "he_normal"},
                    {"type": "batch_norm"},
                    {"type": "elu"},
                ],
            }
        ),
    )
    assert [f.where for f in found] == ["model.layers[1].layers[0].use_bias"]


def bn_config(momentum: float, **data: Any) -> dict[str, Any]:
    cfg = with_({"model.layers": [{"type": "flatten"}, *bn_block(2, momentum=momentum), OUTPUT]})
    cfg["data"].update(data)
    return cfg


def test_bn_momentum_is_judged_against_the_steps_of_an_epoch():
    # horizon 1/(1 - 0.999) = 1,000 steps; CIFAR-10 less 5,000 for validation is 45,000 examples
    long_epoch = bn_config(
        HIGH_BN_MOMENTUM
    )  # 45,000 / 32 = 1,407 steps ≥ 1,000: the chapter's large-data case
    assert findings_of("batch_norm_momentum_too_high", long_epoch) == []
    short_epoch = bn_config(HIGH_BN_MOMENTUM, limit_train=2000)  # 63 steps
    found = findings_of("batch_norm_momentum_too_high", short_epoch)
    assert [(f.where, f.severity) for f in found] == [("model.layers[1].layers[1].momentum", "warning")]
    assert "63 steps" in found[0].message and "1,000 steps" in found[0].message
    # a run long enough in total, but whose epochs are shorter than the horizon: validation reads stale statistics
    long_run = bn_config(HIGH_BN_MOMENTUM, limit_train=2000)
    long_run["train"]["epochs"] = 20  # 1,260 steps
    found = findings_of("batch_norm_momentum_too_high", long_run)
    assert [f.severity for f in found] == ["warning"] and "an epoch has 63 steps" in found[0].message
    more_nines = bn_config(0.9999)  # horizon 10,000 > 1,407
    assert [f.severity for f in findings_of("batch_norm_momentum_too_high", more_nines)] == ["warning"]


def test_bn_momentum_whose_horizon_outlasts_the_whole_run_is_a_warning_at_any_momentum():
    # 0.99: a horizon of 100 steps; 2,000 examples at batch 128 are 16 steps, one epoch of them 16 in all
    short_run = bn_config(0.99, limit_train=2000)
    short_run["train"].update(batch_size=128, epochs=1)
    found = findings_of("batch_norm_momentum_too_high", short_run)
    assert [f.severity for f in found] == ["warning"]
    assert "only 16 steps" in found[0].message and "set momentum = 0.9 " in found[0].fix
    # seven epochs of 16 steps outlast the horizon: the momentum, below 0.999, is fine
    short_run["train"]["epochs"] = 7
    assert findings_of("batch_norm_momentum_too_high", short_run) == []


def test_bn_momentum_fix_is_the_highest_of_the_chapters_values_that_fits_an_epoch():
    from trainwell.guidelines.advisor import _fitting_bn_momentum

    assert [_fitting_bn_momentum(n) for n in (5, 10, 99, 100, 999, 1000)] == [
        0.9,
        0.9,
        0.9,
        0.99,
        0.99,
        0.999,
    ]


def test_bn_momentum_with_an_unknown_dataset_size_is_an_info(tmp_path):
    cfg = bn_config(HIGH_BN_MOMENTUM, dataset="npz", path=str(tmp_path / "x.npz"))
    assert [f.severity for f in findings_of("batch_norm_momentum_too_high", cfg)] == ["info"]
    cfg = bn_config(HIGH_BN_MOMENTUM, dataset="npz", path=str(tmp_path / "x.npz"), limit_train=500)
    assert [f.severity for f in findings_of("batch_norm_momentum_too_high", cfg)] == ["warning"]


@pytest.mark.parametrize(
    ("optimizer", "key"),
    [
        ({"name": "sgd", "momentum": HIGH_OPTIMIZER_MOMENTUM}, "momentum"),
        ({"name": "rmsprop", "momentum": 0.9995}, "momentum"),
        ({"name": "adam", "beta_1": HIGH_OPTIMIZER_MOMENTUM}, "beta_1"),
        ({"name": "nadam", "beta_1": 0.9999}, "beta_1"),
    ],
)
def test_optimizer_momentum_names_the_key(optimizer, key):
    found = findings_of("optimizer_momentum_too_high", with_({"train.optimizer": optimizer}))
    assert [f.where for f in found] == [f"train.optimizer.{key}"]
    assert key in found[0].message and sources.MOMENTUM in found[0].guideline


def test_under_1cycle_the_schedules_max_momentum_is_the_one_that_counts():
    one_cycle = {"name": "one_cycle", "max_lr": 0.05}
    # the optimizer's own momentum is overwritten at every step by 1cycle's: not judged
    calm = with_({"train.optimizer": {"name": "sgd", "momentum": 0.999}, "train.schedule": one_cycle})
    assert findings_of("optimizer_momentum_too_high", calm) == []
    wild = with_(
        {"train.optimizer": {"name": "nadam"}, "train.schedule": one_cycle | {"max_momentum": 0.999}}
    )
    assert [f.where for f in findings_of("optimizer_momentum_too_high", wild)] == [
        "train.schedule.max_momentum"
    ]
    # unless the schedule does not cycle it
    fixed = with_(
        {
            "train.optimizer": {"name": "sgd", "momentum": 0.999},
            "train.schedule": one_cycle | {"cycle_momentum": False},
        }
    )
    assert [f.where for f in findings_of("optimizer_momentum_too_high", fixed)] == [
        "train.optimizer.momentum"
    ]
    # an optimizer with no momentum has nothing to cycle
    assert (
        findings_of(
            "optimizer_momentum_too_high",
            with_(
                {
                    "train.optimizer": {"name": "adagrad"},
                    "train.schedule": one_cycle | {"max_momentum": 0.999},
                }
            ),
        )
        == []
    )


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "power", "s": 20},
        {"name": "piecewise_constant", "boundaries": [5], "values": [0.01, 0.001]},
        {"name": "performance", "factor": 0.5, "patience": 5},
    ],
)
def test_any_schedule_or_keras_decay_is_not_a_fixed_learning_rate(schedule):
    assert findings_of("fixed_learning_rate", with_({"train.schedule": schedule})) == []
    decay = with_(
        {"train.schedule": None, "train.optimizer": {"name": "sgd", "momentum": 0.9, "decay": 1e-4}}
    )
    assert findings_of("fixed_learning_rate", decay) == []


def test_adams_beta_2_is_not_a_momentum():
    # beta_2 = 0.999 is Adam's default decay of the squared gradients
    assert (
        findings_of(
            "optimizer_momentum_too_high", with_({"train.optimizer": {"name": "adam", "beta_2": 0.9999}})
        )
        == []
    )


def test_adaptive_optimizer_is_an_info_suggesting_nag():
    found = findings_of("adaptive_optimizer", with_({"train.optimizer": {"name": "adam"}}))
    assert found[0].severity == "info" and "nesterov = true" in found[0].fix
    # AdaGrad has its own, stronger rule and is not also called merely adaptive
    assert findings_of("adaptive_optimizer", with_({"train.optimizer": {"name": "adagrad"}})) == []


def test_no_early_stopping_asks_for_a_validation_set_when_there_is_none():
    data = with_({"train.early_stopping": None, "data.validation_size": 0})
    assert "data.validation_size" in findings_of("no_early_stopping", data)[0].fix
    assert (
        "data.validation_size" not in findings_of("no_early_stopping", TRIGGERS["no_early_stopping"])[0].fix
    )


def test_findings_come_warnings_first_and_are_counted():
    data = with_({"train.optimizer": {"name": "nadam"}, "train.early_stopping": None})
    found = advise(validate_config(data))
    assert [f.severity for f in found] == ["warning", "info"]
    assert count_by_severity(found) == {"warning": 1, "info": 1}


# ------------------------------------------------------------- MC dropout with BN in training mode: no rule


def test_a_batch_norm_layer_cannot_be_forced_into_training_mode_by_a_config():
    data = layers(*hidden(2), {"type": "batch_norm", "training": True})
    with pytest.raises(ConfigError, match="unknown key 'training'"):
        validate_config(data)


def test_mc_dropout_samples_while_batch_norm_uses_its_moving_statistics():
    torch.manual_seed(0)
    spec = {
        "layers": [
            {"type": "dense", "units": 6, "use_bias": False},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.5, "mc": True},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    model = build_model(spec, (4,)).eval()
    bn = next(m for m in model.modules() if isinstance(m, BatchNorm))
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    before = (bn.running_mean.clone(), bn.running_var.clone())
    x = torch.randn(64, 4)
    with torch.no_grad():
        z = model.dense_1(x)
        expected = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(bn(z), expected)  # inference-mode BN: the moving statistics
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout still samples: MC dropout works
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])


def test_evaluation_runs_batch_norm_in_inference_mode_even_from_a_training_mode_model():
    torch.manual_seed(0)
    spec = {
        "layers": [
            {"type": "dense", "units": 6},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.5, "mc": True},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    model = build_model(spec, (4,)).train()
    bn = next(m for m in model.modules() if isinstance(m, BatchNorm))
    before = bn.running_mean.clone()
    evaluate(model, torch.randn(50, 4), torch.randint(0, 3, (50,)))
    assert torch.equal(bn.running_mean, before)  # a training-mode BN would have updated it
    assert model.training  # and the caller's mode is given back


def test_mc_dropout_predictions_keep_batch_norm_in_inference_mode():
    from trainwell.analysis.mc_dropout import predict_mc

    torch.manual_seed(0)
    spec = {
        "layers": [
            {"type": "dense", "units": 6, "use_bias": False},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.5, "mc": True},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    model = build_model(spec, (4,)).train()  # even a model left in training mode
    bn = next(m for m in model.modules() if isinstance(m, BatchNorm))
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
    before = bn.running_mean.clone()
    x = torch.randn(20, 4)
    predict_mc(model, x, samples=50, seed=1)
    # a training-mode BN would have moved its statistics towards the batch's
    assert torch.equal(bn.running_mean, before) and model.training
