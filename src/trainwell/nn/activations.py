"""Activation functions by their Keras names, built as ``torch.nn`` modules.

Every name works as a dense layer's ``activation`` and as a layer of its own (``{ type = "activation",
name = "elu" }`` or the shorthand ``{ type = "elu" }``; see :mod:`trainwell.nn.layers`). Keras defaults where
they differ from torch's (``docs/keras-vs-torch.md``, G17):

- ``leaky_relu``: slope 0.2 by default as a dense layer's ``activation`` and in ``{ type = "activation",
  name = "leaky_relu" }`` (both are Keras's ``leaky_relu`` function), 0.3 as ``{ type = "leaky_relu" }``
  (Keras's ``LeakyReLU`` layer; the layer spec fills in :data:`LEAKY_RELU_LAYER_ALPHA`); torch's is 0.01.
- ``prelu``: one learnable slope per unit (per element of a sample: Keras's ``shared_axes=None``), starting
  at 0 so that the unit starts as a ReLU (Keras's ``alpha_initializer="zeros"``); torch's ``nn.PReLU``
  shares one slope starting at 0.25.
- ``gelu`` is the exact ``x · Φ(x)`` (Keras's ``approximate=False``), not the tanh approximation.
- ``rrelu`` (Xu et al. 2015) has no Keras counterpart; its defaults are torch's (``lower = 1/8``,
  ``upper = 1/3``): a random slope in ``[lower, upper]`` per element in training, their mean at inference.

``sigmoid``/``logistic`` and ``swish``/``silu`` are the same function under the two names the chapter and
Keras use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import BeforeValidator, Field, field_validator, model_validator
from torch import nn

from trainwell.nn.initializers import Fill, InitializerSpec, initialize_
from trainwell.registry import Registry
from trainwell.spec import Spec, name_or_table

# Keras's LeakyReLU layer default slope; its leaky_relu function (and so activation = "leaky_relu") uses 0.2.
LEAKY_RELU_LAYER_ALPHA = 0.3
LEAKY_RELU_FUNCTION_ALPHA = 0.2
# SELU's constants (Klambauer et al. 2017, "Self-Normalizing Neural Networks", eq. 14): the α and λ for which
# mean 0 and variance 1 is a fixed point of the map from one layer's activation moments to the next's.
# torch's nn.SELU uses the same values.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

PLAIN_ACTIVATIONS = (
    "sigmoid",
    "logistic",
    "tanh",
    "relu",
    "selu",
    "softmax",
    "linear",
    "swish",
    "silu",
    "gelu",
)


class PlainActivation(Spec):
    name: Literal["sigmoid", "logistic", "tanh", "relu", "selu", "softmax", "linear", "swish", "silu", "gelu"]


class LeakyReLUSpec(Spec):
    """``f(x) = x`` for ``x >= 0``, ``alpha · x`` otherwise (Maas et al. 2013)."""

    name: Literal["leaky_relu"]
    alpha: float = Field(default=LEAKY_RELU_FUNCTION_ALPHA, ge=0)  # the layer form fills in 0.3 (module doc)


class ELUSpec(Spec):
    """``f(x) = x`` for ``x > 0``, ``alpha · (exp(x) - 1)`` otherwise (Clevert et al. 2015)."""

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
    """``f(x) = x`` for ``x >= 0``, ``α · x`` otherwise, with one learned α per unit (He et al. 2015)."""

    name: Literal["prelu"]
    # Keras starts every slope at 0 (the unit starts as a ReLU); torch's nn.PReLU default would be
    # { name = "constant", value = 0.25 }.
    alpha_initializer: InitializerSpec = Fill(name="zeros")

    @field_validator("alpha_initializer")
    @classmethod
    def _vector_initializer(cls, value: Spec) -> Spec:
        if value.name == "orthogonal":
            raise ValueError(
                "orthogonal needs a matrix, but a PReLU has one slope per unit; use zeros or constant"
            )
        return value


ActivationSpec = Annotated[
    PlainActivation | LeakyReLUSpec | ELUSpec | RReLUSpec | PReLUSpec,
    Field(discriminator="name"),
    BeforeValidator(name_or_table),
]

ACTIVATION_NAMES = (*PLAIN_ACTIVATIONS, "leaky_relu", "elu", "rrelu", "prelu")


class ElementwisePReLU(nn.Module):
    """PReLU with one learnable slope per element of a sample (Keras's default, ``shared_axes=None``).

    ``nn.PReLU(num_parameters=C)`` covers rank-2 inputs ``(N, C)``; this covers any rank, written by hand
    because torch's PReLU learns per channel of dim 1 only.
    """

    def __init__(self, shape: tuple[int, ...], init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def _prelu(spec: PReLUSpec, shape: tuple[int, ...]) -> nn.Module:
    module = nn.PReLU(num_parameters=shape[0]) if len(shape) == 1 else ElementwisePReLU(shape)
    initialize_(module.weight, spec.alpha_initializer)
    return module


ActivationFactory = Callable[[Spec, tuple[int, ...]], nn.Module]

ACTIVATIONS: Registry[ActivationFactory] = Registry(
    "activation",
    {
        "sigmoid": lambda s, shape: nn.Sigmoid(),
        "logistic": lambda s, shape: nn.Sigmoid(),
        "tanh": lambda s, shape: nn.Tanh(),
        "relu": lambda s, shape: nn.ReLU(),
        "selu": lambda s, shape: (
            nn.SELU()
        ),  # λ·x, or λ·α·(exp(x) - 1) below 0, with SELU_SCALE and SELU_ALPHA
        "softmax": lambda s, shape: nn.Softmax(dim=-1),  # Keras's axis=-1
        "linear": lambda s, shape: nn.Identity(),
        "swish": lambda s, shape: nn.SiLU(),
        "silu": lambda s, shape: nn.SiLU(),
        "gelu": lambda s, shape: nn.GELU(approximate="none"),  # Keras's default is the exact erf form
        "leaky_relu": lambda s, shape: nn.LeakyReLU(s.alpha),
        "elu": lambda s, shape: nn.ELU(alpha=s.alpha),
        "rrelu": lambda s, shape: nn.RReLU(lower=s.lower, upper=s.upper),
        "prelu": _prelu,
    },
)


def build_activation(spec: Spec, shape: tuple[int, ...]) -> nn.Module:
    """The module for activation ``spec`` (any member of :data:`ActivationSpec`) on per-sample ``shape``.

    ``shape`` matters only to ``prelu``, which learns one slope per element of it.
    """
    return ACTIVATIONS[spec.name](spec, tuple(shape))


def is_linear(spec: Spec) -> bool:
    return spec.name == "linear"


# Families used by diagnostics and the advisor.
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "rrelu")
SATURATING = ("sigmoid", "logistic", "tanh")
