"""Layer specs (the ``[model]`` table's ``layers``) and the few modules torch does not have as such.

Every layer type of a config, with Keras's names and defaults:

- ``flatten``; ``dense`` (``units``, ``activation``, ``use_bias``, initializers, ``kernel_regularizer``,
  ``kernel_constraint``); ``activation`` (``name`` and the activation's parameters, Keras's ``Activation``
  layer; any activation name is also a layer type of its own, e.g. ``{ type = "leaky_relu", alpha = 0.2 }``,
  Keras's ``LeakyReLU`` layer, whose default slope is 0.3 where the function's is 0.2);
- ``batch_norm`` with Keras's conventions: ``momentum = 0.99`` keeps 99 % of the moving statistics at each
  step (torch calls that 0.01), ``epsilon = 1e-3``, ``center`` and ``scale``;
- ``dropout`` and ``alpha_dropout`` (``rate``; ``mc = true`` keeps it active at inference: MC dropout);
- ``repeat`` (``count`` copies of ``layers``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field, field_validator
from torch import nn

from trainwell.nn.activations import ACTIVATION_NAMES, LEAKY_RELU_LAYER_ALPHA, ActivationSpec, PlainActivation
from trainwell.nn.initializers import Fill, InitializerSpec, VarianceScalingPreset
from trainwell.registry import unknown_name_message
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

    @field_validator("bias_initializer")
    @classmethod
    def _vector_initializer(cls, value: Spec) -> Spec:
        if value.name == "orthogonal":
            raise ValueError(
                "orthogonal needs a matrix, but a bias is a vector; use zeros (Keras's default) or constant"
            )
        return value


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


LAYER_TYPES = ("flatten", "dense", "activation", "batch_norm", "dropout", "alpha_dropout", "repeat")


def _activation_layer_shorthand(value: Any) -> Any:
    """Read the two shorter ways to write an activation layer, and reject unknown layer types.

    ``{ type = "elu", alpha = 0.5 }`` (Keras's ``ELU`` layer) and ``{ type = "activation", name = "elu",
    alpha = 0.5 }`` (Keras's ``Activation`` layer) both mean ``{ type = "activation", activation = { name =
    "elu", alpha = 0.5 } }``. The only activation whose layer default differs from its function default is
    leaky ReLU: ``{ type = "leaky_relu" }`` is Keras's ``LeakyReLU()`` and gets its slope 0.3 here.
    """
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    if kind in ACTIVATION_NAMES:
        params = {k: v for k, v in value.items() if k != "type"}
        if kind == "leaky_relu":
            params.setdefault("alpha", LEAKY_RELU_LAYER_ALPHA)
        return {"type": "activation", "activation": params | {"name": kind}}
    if kind == "activation" and "activation" not in value:
        return {"type": "activation", "activation": {k: v for k, v in value.items() if k != "type"}}
    if isinstance(kind, str) and kind not in LAYER_TYPES:
        # Listed here rather than by the union's tag check, so that the activation names count as types too.
        raise ValueError(unknown_name_message("layer type", kind, [*LAYER_TYPES, *ACTIVATION_NAMES]))
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

    def __init__(
        self,
        in_features: int,
        units: int,
        activation: nn.Module,
        use_bias: bool = True,
        regularizer: RegularizerSpec | None = None,
        max_norm: float | None = None,
    ):
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
    """Batch Normalization over the last axis (Keras's ``axis=-1``), with Keras's parameter conventions
    (Ioffe & Szegedy 2015).

    In training, each feature is normalized with the batch's mean μ_B and biased variance σ²_B over the
    ``n`` values it has in the batch (samples times positions): ``y = γ · (x − μ_B) / sqrt(σ²_B + ε) + β``;
    at inference, with the moving statistics instead. After each training batch, with Keras's ``momentum``
    ``m`` (the share of the old value kept; torch's ``momentum`` attribute holds ``1 − m``)::

        moving_mean ← m · moving_mean + (1 − m) · μ_B
        moving_var  ← m · moving_var  + (1 − m) · σ²_B · n / (n − 1)

    The variance update uses the *unbiased* batch variance, as torch does and unlike Keras, which uses σ²_B
    (``docs/keras-vs-torch.md``, G3): a factor n/(n−1) in the moving estimate only. ``center = False`` /
    ``scale = False`` drop β / γ (torch's ``affine`` drops both). Inputs of rank > 2 are channels-last
    ``(N, ..., C)`` as in Keras.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
    ):
        super().__init__(num_features, eps=epsilon, momentum=1.0 - momentum, affine=True)
        if not scale:
            self.register_parameter("weight", None)
        if not center:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        # torch's version assumes both γ and β exist whenever affine is set.
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

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
