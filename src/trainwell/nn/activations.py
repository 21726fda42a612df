"""Activation functions by their Keras names, built as ``torch.nn`` modules.

Keras defaults where they differ from torch's (see ``docs/keras-vs-torch.md``, G17):

- ``leaky_relu``: slope 0.2 as a dense layer's ``activation`` (Keras's function), 0.3 as a layer of its
  own (Keras's ``LeakyReLU`` layer); torch's default is 0.01.
- ``prelu``: one learnable slope per unit, starting at 0 (Keras); torch shares one slope starting at 0.25.
- ``rrelu`` has no Keras counterpart; its defaults are torch's (``lower = 1/8``, ``upper = 1/3``).

``sigmoid``/``logistic`` and ``swish``/``silu`` are the same function under the two names the chapter and
Keras use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator
from torch import nn

from trainwell.registry import Registry
from trainwell.spec import Spec, name_or_table

# Keras's LeakyReLU layer default slope; its leaky_relu function uses LEAKY_RELU_FUNCTION_ALPHA.
LEAKY_RELU_LAYER_ALPHA = 0.3
LEAKY_RELU_FUNCTION_ALPHA = 0.2

PLAIN_ACTIVATIONS = ("sigmoid", "logistic", "tanh", "relu", "selu", "softmax", "linear", "swish", "silu", "gelu")


class PlainActivation(Spec):
    name: Literal["sigmoid", "logistic", "tanh", "relu", "selu", "softmax", "linear", "swish", "silu", "gelu"]


class LeakyReLUSpec(Spec):
    name: Literal["leaky_relu"]
    alpha: float | None = Field(default=None, ge=0)  # None: Keras's default for the context (see module doc)


class ELUSpec(Spec):
    name: Literal["elu"]
    alpha: float = Field(default=1.0, gt=0)


class RReLUSpec(Spec):
    name: Literal["rrelu"]
    lower: float = Field(default=1.0 / 8.0, ge=0)
    upper: float = Field(default=1.0 / 3.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> RReLUSpec:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must not exceed upper ({self.upper})")
        return self


class PReLUSpec(Spec):
    name: Literal["prelu"]
    alpha_initializer: float = 0.0  # Keras starts every slope at 0 (the unit starts as a ReLU)


ActivationSpec = Annotated[
    PlainActivation | LeakyReLUSpec | ELUSpec | RReLUSpec | PReLUSpec,
    Field(discriminator="name"),
    BeforeValidator(name_or_table),
]

ACTIVATION_NAMES = (*PLAIN_ACTIVATIONS, "leaky_relu", "elu", "rrelu", "prelu")


class ElementwisePReLU(nn.Module):
    """PReLU with one learnable slope per element of the input (Keras's default, ``shared_axes=None``).

    ``nn.PReLU(num_parameters=C)`` covers rank-2 inputs ``(N, C)``; this covers any rank, written by hand
    because torch's PReLU learns per channel of dim 1 only.
    """

    def __init__(self, shape: tuple[int, ...], init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def _prelu(spec: PReLUSpec, shape: tuple[int, ...], as_layer: bool) -> nn.Module:
    if len(shape) == 1:
        return nn.PReLU(num_parameters=shape[0], init=spec.alpha_initializer)
    return ElementwisePReLU(shape, spec.alpha_initializer)


def _leaky(spec: LeakyReLUSpec, shape: tuple[int, ...], as_layer: bool) -> nn.Module:
    default = LEAKY_RELU_LAYER_ALPHA if as_layer else LEAKY_RELU_FUNCTION_ALPHA
    return nn.LeakyReLU(default if spec.alpha is None else spec.alpha)


ActivationFactory = Callable[[Spec, tuple[int, ...], bool], nn.Module]

ACTIVATIONS: Registry[ActivationFactory] = Registry("activation", {
    "sigmoid": lambda s, shape, layer: nn.Sigmoid(),
    "logistic": lambda s, shape, layer: nn.Sigmoid(),
    "tanh": lambda s, shape, layer: nn.Tanh(),
    "relu": lambda s, shape, layer: nn.ReLU(),
    "selu": lambda s, shape, layer: nn.SELU(),
    "softmax": lambda s, shape, layer: nn.Softmax(dim=-1),
    "linear": lambda s, shape, layer: nn.Identity(),
    "swish": lambda s, shape, layer: nn.SiLU(),
    "silu": lambda s, shape, layer: nn.SiLU(),
    "gelu": lambda s, shape, layer: nn.GELU(approximate="none"),  # Keras's default is the exact erf form
    "leaky_relu": _leaky,
    "elu": lambda s, shape, layer: nn.ELU(alpha=s.alpha),
    "rrelu": lambda s, shape, layer: nn.RReLU(lower=s.lower, upper=s.upper),
    "prelu": _prelu,
})


def build_activation(spec: Spec, shape: tuple[int, ...], *, as_layer: bool = False) -> nn.Module:
    """The module for activation ``spec`` applied to inputs of per-sample ``shape``.

    ``as_layer`` selects Keras's layer defaults over its function defaults (only ``leaky_relu`` differs).
    """
    return ACTIVATIONS[spec.name](spec, shape, as_layer)


def is_linear(spec: Spec) -> bool:
    return spec.name == "linear"


# Families used by diagnostics and the advisor.
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "rrelu")
SATURATING = ("sigmoid", "logistic", "tanh")
