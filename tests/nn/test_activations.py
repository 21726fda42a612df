"""Activations: every name as a dense layer's activation and as a layer, against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainwell.errors import ConfigError
from trainwell.nn.activations import SELU_ALPHA, SELU_SCALE
from trainwell.nn.build import build_model
from trainwell.nn.summary import summarize_model

X = torch.linspace(-4, 4, 81, dtype=torch.float64).reshape(9, 9)  # includes 0 and both signs


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def selu_constants() -> tuple[float, float]:
    """α01 and λ01 of Klambauer et al. (2017), eq. 14: the SELU whose fixed point is mean 0, variance 1."""
    e, erfc = math.e, math.erfc
    alpha = -math.sqrt(2 / math.pi) / (erfc(1 / math.sqrt(2)) * math.exp(0.5) - 1)
    lam = (
        (1 - erfc(1 / math.sqrt(2)) * math.sqrt(e))
        * math.sqrt(2 * math.pi)
        * (
            2 * erfc(math.sqrt(2)) * e**2
            + math.pi * erfc(1 / math.sqrt(2)) ** 2 * e
            - 2 * (2 + math.pi) * erfc(1 / math.sqrt(2)) * math.sqrt(e)
            + math.pi
            + 2
        )
        ** -0.5
    )
    return alpha, lam


ALPHA01, LAMBDA01 = selu_constants()

# name -> (elementwise formula, written from its paper / Keras's docs)
FORMULAS = {
    "sigmoid": sigmoid,
    "logistic": sigmoid,
    "tanh": math.tanh,
    "relu": lambda x: max(0.0, x),
    "selu": lambda x: LAMBDA01 * (x if x > 0 else ALPHA01 * (math.exp(x) - 1)),
    "elu": lambda x: x if x > 0 else math.exp(x) - 1,
    "leaky_relu": lambda x: x if x >= 0 else 0.2 * x,  # Keras's function default (Dense activation)
    "prelu": lambda x: max(0.0, x),  # slopes start at 0
    "linear": lambda x: x,
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
}


def expected(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "softmax":
        e = torch.tensor([[math.exp(v) for v in row] for row in x.tolist()], dtype=torch.float64)
        return e / e.sum(dim=-1, keepdim=True)
    f = FORMULAS[name]
    return torch.tensor([[f(v) for v in row] for row in x.tolist()], dtype=torch.float64)


def as_dense_activation(activation: object, units: int = 9) -> nn.Module:
    """A Dense(units) with ``activation`` whose linear part is the identity, so the model computes act(x)."""
    model = build_model(
        {"layers": [{"type": "dense", "units": units, "activation": activation}, {"type": "flatten"}]},
        (units,),
    ).double()
    with torch.no_grad():
        model[0].linear.weight.copy_(torch.eye(units))
        model[0].linear.bias.zero_()
    return model


def as_layer(layer: dict, shape: tuple[int, ...] = (9,)) -> nn.Module:
    return build_model({"layers": [layer]}, shape).double()


def test_selu_constants_are_klambauers():
    assert math.isclose(SELU_ALPHA, ALPHA01, rel_tol=1e-14) and math.isclose(
        SELU_SCALE, LAMBDA01, rel_tol=1e-14
    )
    torch.testing.assert_close(nn.SELU()(X), expected("selu", X))  # torch's SELU uses them too


@pytest.mark.parametrize("name", [*FORMULAS, "softmax"])
def test_every_activation_as_a_dense_activation(name):
    torch.testing.assert_close(as_dense_activation(name).eval()(X), expected(name, X))


@pytest.mark.parametrize("name", [n for n in [*FORMULAS, "softmax"] if n != "leaky_relu"])
def test_every_activation_as_a_layer_in_both_spellings(name):
    for layer in ({"type": "activation", "name": name}, {"type": name}):
        torch.testing.assert_close(as_layer(layer).eval()(X), expected(name, X))


def leaky(alpha: float, x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, alpha * x)


def test_leaky_relu_slope_follows_keras_function_and_layer_defaults():
    # Keras: activation = "leaky_relu" and Activation("leaky_relu") are the function (0.2); LeakyReLU() is 0.3.
    torch.testing.assert_close(as_dense_activation("leaky_relu")(X), leaky(0.2, X))
    torch.testing.assert_close(as_layer({"type": "activation", "name": "leaky_relu"})(X), leaky(0.2, X))
    torch.testing.assert_close(as_layer({"type": "leaky_relu"})(X), leaky(0.3, X))
    torch.testing.assert_close(as_layer({"type": "leaky_relu", "alpha": 0.2})(X), leaky(0.2, X))
    torch.testing.assert_close(as_dense_activation({"name": "leaky_relu", "alpha": 0.05})(X), leaky(0.05, X))


def test_elu_alpha_as_activation_and_as_layer():
    want = torch.where(X > 0, X, 0.5 * (torch.exp(X) - 1))
    torch.testing.assert_close(as_dense_activation({"name": "elu", "alpha": 0.5})(X), want)
    torch.testing.assert_close(as_layer({"type": "elu", "alpha": 0.5})(X), want)
    torch.testing.assert_close(as_layer({"type": "activation", "name": "elu", "alpha": 0.5})(X), want)


def test_prelu_learns_one_slope_per_unit_starting_at_zero():
    model = as_dense_activation("prelu", units=9)
    slopes = model[0].activation.weight
    assert slopes.shape == (9,) and torch.equal(slopes, torch.zeros(9, dtype=torch.float64))
    with torch.no_grad():
        slopes.copy_(torch.arange(9) / 10)
    torch.testing.assert_close(model(X), torch.where(X >= 0, X, X * torch.arange(9) / 10))
    assert summarize_model(model, (9,))["trainable"] == 9 * 9 + 9 + 9  # kernel, bias, one slope per unit


def test_prelu_layer_on_a_multi_axis_input_has_one_slope_per_element():
    """Keras's PReLU (shared_axes=None) learns alpha of shape input_shape[1:]: (4, 3) here."""
    model = as_layer({"type": "prelu"}, shape=(4, 3))
    slopes = model[0].weight
    assert slopes.shape == (4, 3)
    with torch.no_grad():
        slopes.copy_(torch.arange(12, dtype=torch.float64).reshape(4, 3))
    x = -torch.ones(2, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x), -torch.arange(12, dtype=torch.float64).reshape(4, 3).expand(2, 4, 3))
    assert summarize_model(model, (4, 3))["trainable"] == 12


def test_prelu_alpha_initializer_is_an_initializer():
    model = as_layer({"type": "prelu", "alpha_initializer": {"name": "constant", "value": 0.25}})
    torch.testing.assert_close(model(X), leaky(0.25, X))


def test_rrelu_slope_is_random_in_training_and_the_mean_at_inference():
    layer = as_layer({"type": "rrelu", "lower": 0.1, "upper": 0.3})
    x = -torch.ones(1000, 9, dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x), 0.2 * x)  # (lower + upper) / 2
    torch.manual_seed(0)
    slopes = layer.train()(x) / x
    assert slopes.min().item() >= 0.1 and slopes.max().item() <= 0.3 and slopes.std().item() > 0.03
    torch.testing.assert_close(layer.train()(-x), -x)  # positive inputs pass


def test_unknown_activations_are_rejected_with_the_valid_names():
    with pytest.raises(
        ConfigError,
        match=r"model.layers\[0\].activation: unknown activation 'selu2' \(did you "
        r"mean 'selu'\?\); valid names: elu, gelu, leaky_relu, linear, logistic, "
        r"prelu, relu, rrelu, selu, sigmoid, silu, softmax, swish, tanh",
    ):
        build_model({"layers": [{"type": "dense", "units": 2, "activation": "selu2"}]}, (2,))
    with pytest.raises(
        ConfigError,
        match=r"model.layers\[0\]: unknown layer type 'leakyrelu' \(did you mean "
        r"'leaky_relu'\?\); valid layer type names: activation, alpha_dropout",
    ):
        build_model({"layers": [{"type": "leakyrelu"}]}, (2,))
    with pytest.raises(
        ConfigError, match=r"model.layers\[0\].alpha: Input should be greater than or equal to 0"
    ):
        build_model({"layers": [{"type": "leaky_relu", "alpha": -0.1}]}, (2,))
    with pytest.raises(ConfigError, match=r"lower \(0.5\) must not exceed upper \(0.2\)"):
        build_model({"layers": [{"type": "rrelu", "lower": 0.5, "upper": 0.2}]}, (2,))
