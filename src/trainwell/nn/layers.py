"""Layer specs (the ``[model]`` table's ``layers``) and the few modules torch does not have as such.

Every layer type of a config, with Keras's names and defaults:

- ``flatten``; ``dense`` (``units``, ``activation``, ``use_bias``, initializers, ``kernel_regularizer``,
  ``kernel_constraint``); ``activation`` (``name`` and the activation's parameters; any activation name is
  also a layer type of its own, e.g. ``{ type = "leaky_relu", alpha = 0.2 }``);
- ``batch_norm`` with Keras's conventions: ``momentum = 0.99`` keeps 99 % of the moving statistics at each
  step (torch calls that 0.01), ``epsilon = 1e-3``, ``center`` and ``scale``;
- ``dropout`` and ``alpha_dropout`` (``rate``; ``mc = true`` keeps it active at inference: MC dropout);
- ``repeat`` (``count`` copies of ``layers``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field
from torch import nn

from trainwell.nn.activations import ACTIVATION_NAMES, ActivationSpec, PlainActivation
from trainwell.nn.initializers import Fill, InitializerSpec, VarianceScalingPreset
from trainwell.spec import Spec


class RegularizerSpec(Spec):
    """Keras's ``L1L2``: adds ``l1 · Σ|w| + l2 · Σw²`` to the loss (the full ``l2 · Σw²``, not half)."""

    l1: float = Field(default=0.0, ge=0)
    l2: float = Field(default=0.0, ge=0)


class ConstraintSpec(Spec):
    """Keras's ``MaxNorm``: after each step, every unit's incoming weight vector is scaled to norm ≤ max_norm."""

    max_norm: float = Field(gt=0)


class FlattenSpec(Spec):
    type: Literal["flatten"]


class DenseSpec(Spec):
    type: Literal["dense"]
    units: int = Field(gt=0)
    activation: ActivationSpec = PlainActivation(name="linear")
    use_bias: bool = True
    kernel_initializer: InitializerSpec = VarianceScalingPreset(name="glorot_uniform")  # Keras's default
    bias_initializer: InitializerSpec = Fill(name="zeros")
    kernel_regularizer: RegularizerSpec | None = None
    kernel_constraint: ConstraintSpec | None = None


class ActivationLayerSpec(Spec):
    type: Literal["activation"]
    activation: ActivationSpec


class BatchNormSpec(Spec):
    type: Literal["batch_norm"]
    momentum: float = Field(default=0.99, ge=0, lt=1)  # Keras convention: the share of the old value kept
    epsilon: float = Field(default=1e-3, gt=0)
    center: bool = True
    scale: bool = True


class DropoutSpec(Spec):
    type: Literal["dropout", "alpha_dropout"]
    rate: float = Field(ge=0, lt=1)
    mc: bool = False


class RepeatSpec(Spec):
    type: Literal["repeat"]
    count: int = Field(ge=1)
    layers: list[LayerSpec] = Field(min_length=1)


def _activation_layer_shorthand(value: Any) -> Any:
    """``{ type = "elu", alpha = 0.5 }`` and ``{ type = "activation", name = "elu", alpha = 0.5 }`` both mean
    ``{ type = "activation", activation = { name = "elu", alpha = 0.5 } }``."""
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    if kind in ACTIVATION_NAMES:
        return {"type": "activation", "activation": {k: v for k, v in value.items() if k != "type"} | {"name": kind}}
    if kind == "activation" and "activation" not in value:
        return {"type": "activation", "activation": {k: v for k, v in value.items() if k != "type"}}
    return value


LayerSpec = Annotated[
    FlattenSpec | DenseSpec | ActivationLayerSpec | BatchNormSpec | DropoutSpec | RepeatSpec,
    Field(discriminator="type"),
    BeforeValidator(_activation_layer_shorthand),
]
RepeatSpec.model_rebuild()

LeafLayerSpec = FlattenSpec | DenseSpec | ActivationLayerSpec | BatchNormSpec | DropoutSpec


def expand(layers: list) -> list[LeafLayerSpec]:
    """The layer list with every ``repeat`` unrolled, in order."""
    out: list = []
    for layer in layers:
        if isinstance(layer, RepeatSpec):
            for _ in range(layer.count):
                out.extend(expand(layer.layers))
        else:
            out.append(layer)
    return out


class Dense(nn.Module):
    """Keras's ``Dense``: ``activation(x @ W + b)`` on the last axis, with its kernel's regularizer and
    constraint kept beside it so the training loop can find them.

    ``linear`` is a plain ``nn.Linear`` (weight ``(units, in)``), so torch's pruning, fusion and quantization
    utilities apply to it unchanged.
    """

    def __init__(self, in_features: int, units: int, activation: nn.Module, use_bias: bool = True,
                 regularizer: RegularizerSpec | None = None, max_norm: float | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, units, bias=use_bias)
        self.activation = activation
        self.regularizer = regularizer if regularizer and (regularizer.l1 or regularizer.l2) else None
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    def extra_repr(self) -> str:
        extras = []
        if self.regularizer:
            extras.append(f"l1={self.regularizer.l1}, l2={self.regularizer.l2}")
        if self.max_norm:
            extras.append(f"max_norm={self.max_norm}")
        return ", ".join(extras)


class BatchNorm(nn.BatchNorm1d):
    """Batch Normalization over the last axis (Keras's ``axis=-1``), with Keras's parameter conventions.

    ``momentum`` is Keras's (the share of the moving statistics kept at each step) and is stored as torch's
    ``1 - momentum``. ``center = False`` / ``scale = False`` drop β / γ (torch's ``affine`` drops both).
    Like torch and unlike Keras, the moving variance is updated with the *unbiased* batch variance
    (``docs/keras-vs-torch.md``, G3): the difference is a factor n/(n−1) in the moving estimate only.
    Inputs of rank > 2 are channels-last ``(N, ..., C)`` as in Keras.
    """

    def __init__(self, num_features: int, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True):
        super().__init__(num_features, eps=epsilon, momentum=1.0 - momentum, affine=True)
        if not scale:
            self.register_parameter("weight", None)
        if not center:
            self.register_parameter("bias", None)

    @property
    def keras_momentum(self) -> float:
        return 1.0 - self.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() <= 2:
            return super().forward(x)
        shape = x.shape
        y = super().forward(x.reshape(shape[0], -1, shape[-1]).transpose(1, 2))
        return y.transpose(1, 2).reshape(shape)


class MCDropout(nn.Dropout):
    """Dropout that stays active in inference mode (Gal & Ghahramani 2016): for MC-dropout predictions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


class MCAlphaDropout(nn.AlphaDropout):
    """Alpha dropout that stays active in inference mode, for MC dropout on SELU nets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.alpha_dropout(x, self.p, training=True)
