"""From the ``[model]`` table to a plain ``torch.nn.Sequential``.

The model takes inputs in the chapter's (Keras's) layout, ``(N, H, W, C)`` images, and returns what Keras
returns: probabilities when the last layer is a softmax (or sigmoid) dense layer. So that training can compute
the loss from logits (log-softmax fused into the loss, numerically stable), that output activation is built
as a module of its own, the last one of the sequence: ``model[:-1]`` gives logits (see :func:`split_output`).

Children are named after their Keras layer type, numbered from 1 (``dense_1``, ``batch_normalization_1``,
...); a split output activation is named ``output_softmax`` / ``output_sigmoid``.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from typing import Any

from pydantic import Field, ValidationError
from torch import nn

from trainwell.errors import ConfigError
from trainwell.nn.activations import build_activation
from trainwell.nn.initializers import initialize_
from trainwell.nn.layers import (
    ActivationLayerSpec,
    BatchNorm,
    BatchNormSpec,
    Dense,
    DenseSpec,
    DropoutSpec,
    FlattenSpec,
    LayerSpec,
    MCAlphaDropout,
    MCDropout,
    expand,
)
from trainwell.spec import Spec

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "logistic")
LAYER_NAMES = {
    "flatten": "flatten",
    "dense": "dense",
    "activation": "activation",
    "batch_norm": "batch_normalization",
    "dropout": "dropout",
    "alpha_dropout": "alpha_dropout",
}


class ModelSpec(Spec):
    """The ``[model]`` table: the layers, in order, and the self-normalization check switch."""

    layers: list[LayerSpec] = Field(min_length=1)
    # Warn when a SELU net breaks a condition of self-normalization (Klambauer et al. 2017).
    check_self_normalization: bool = True


def _as_spec(spec: ModelSpec | dict[str, Any]) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as e:
        from trainwell.config import format_validation_error

        raise ConfigError(format_validation_error(e, prefix="model", data=spec)) from None


def _dense(spec: DenseSpec, shape: tuple[int, ...], activation: nn.Module) -> tuple[Dense, tuple[int, ...]]:
    layer = Dense(
        shape[-1],
        spec.units,
        activation,
        spec.use_bias,
        spec.kernel_regularizer,
        spec.kernel_constraint.max_norm if spec.kernel_constraint else None,
    )
    initialize_(layer.linear.weight, spec.kernel_initializer)
    if layer.linear.bias is not None:
        initialize_(layer.linear.bias, spec.bias_initializer)
    return layer, (*shape[:-1], spec.units)


def build_model(spec: ModelSpec | dict[str, Any], input_shape: tuple[int, ...] | list[int]) -> nn.Sequential:
    """Build the model ``spec`` describes for per-sample inputs of ``input_shape`` (e.g. ``(32, 32, 3)``).

    Weights are drawn from torch's global RNG: seed it (``torch.manual_seed``) for a reproducible model.
    """
    spec = _as_spec(spec)
    shape = tuple(int(d) for d in input_shape)
    leaves = expand(spec.layers)
    counts: Counter[str] = Counter()
    modules: OrderedDict[str, nn.Module] = OrderedDict()

    def add(kind: str, module: nn.Module) -> None:
        counts[kind] += 1
        modules[f"{LAYER_NAMES[kind]}_{counts[kind]}"] = module

    for index, layer in enumerate(leaves):
        last = index == len(leaves) - 1
        if isinstance(layer, FlattenSpec):
            add("flatten", nn.Flatten())
            shape = (math.prod(shape),)
        elif isinstance(layer, DenseSpec):
            split = last and layer.activation.name in OUTPUT_ACTIVATIONS
            act = nn.Identity() if split else build_activation(layer.activation, (*shape[:-1], layer.units))
            module, shape = _dense(layer, shape, act)
            add("dense", module)
            if split:
                kind = "sigmoid" if layer.activation.name == "logistic" else layer.activation.name
                modules[f"output_{kind}"] = build_activation(layer.activation, shape)
        elif isinstance(layer, ActivationLayerSpec):
            add("activation", build_activation(layer.activation, shape))
        elif isinstance(layer, BatchNormSpec):
            add("batch_norm", BatchNorm(shape[-1], layer.momentum, layer.epsilon, layer.center, layer.scale))
        elif isinstance(layer, DropoutSpec):
            if layer.type == "dropout":
                module = MCDropout(layer.rate) if layer.mc else nn.Dropout(layer.rate)
            else:
                module = MCAlphaDropout(layer.rate) if layer.mc else nn.AlphaDropout(layer.rate)
            add(layer.type, module)
        else:  # pragma: no cover - the spec union is closed
            raise TypeError(f"unhandled layer spec {type(layer).__name__}")
    return nn.Sequential(modules)


def split_output(model: nn.Sequential) -> tuple[nn.Module, str]:
    """``(logits_model, output)``: the model without its output activation, and that activation's kind.

    ``output`` is ``"softmax"``, ``"sigmoid"`` or ``"linear"`` (no output activation: the model returns
    ``logits_model``'s values itself). The returned module shares parameters with ``model``.
    """
    last = model[-1]
    if isinstance(last, nn.Softmax):
        return model[:-1], "softmax"
    if isinstance(last, nn.Sigmoid):
        return model[:-1], "sigmoid"
    return model, "linear"


def output_activation(spec: ModelSpec) -> str:
    """The kind of output activation the model of ``spec`` ends with (see :func:`split_output`)."""
    last = expand(spec.layers)[-1]
    if isinstance(last, DenseSpec) and last.activation.name in OUTPUT_ACTIVATIONS:
        return "sigmoid" if last.activation.name == "logistic" else last.activation.name
    if isinstance(last, ActivationLayerSpec) and last.activation.name in OUTPUT_ACTIVATIONS:
        return "sigmoid" if last.activation.name == "logistic" else last.activation.name
    return "linear"


def output_units(spec: ModelSpec) -> int | None:
    """The number of units of the last dense layer, or None when the model has none."""
    dense = [layer for layer in expand(spec.layers) if isinstance(layer, DenseSpec)]
    return dense[-1].units if dense else None


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts as Keras reports them: BN moving mean and variance are non-trainable parameters,
    frozen parameters are non-trainable; ``num_batches_tracked`` (a torch-only counter) is not counted."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    moving = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
    )
    return {"total": trainable + frozen + moving, "trainable": trainable, "non_trainable": frozen + moving}


def dense_layers(model: nn.Module) -> list[tuple[str, Dense]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Dense)]
