"""Batch-Norm folding: an inference-mode BN layer is an affine map, so it can be merged into a dense layer.

In inference mode BN computes ``y = s ⊙ x + t`` with ``s = γ / √(σ² + ε)`` and ``t = β − μ · s`` (moving mean
μ and variance σ²). Next to a dense layer ``z = W x + b`` that map disappears into the layer's weights:

- **BN after a dense layer with a linear activation** (``Dense(linear) → BN``): ``W' = diag(s) W``,
  ``b' = s ⊙ (b − μ) + β`` — torch's ``torch.nn.utils.fusion.fuse_linear_bn_weights``.
- **BN before a dense layer** (BN first, or after an activation): ``W' = W diag(s)``, ``b' = W t + b``
  (:func:`fuse_bn_linear_weights`, written here: torch's fusion helpers cover only BN *after* a layer).
  Layers that are the identity in inference mode (``flatten``, ``dropout``, ``alpha_dropout``) may stand
  between the BN and the dense layer; after a ``flatten`` the per-channel ``s`` and ``t`` are tiled over the
  flattened positions (channels-last order: feature ``i`` belongs to channel ``i mod C``).

:func:`fold_batch_norms` returns a *new* model and the spec of its architecture (no BN layers; the dense
layers that received a BN always have a bias), leaving the original untouched. The folded model is for
inference: its outputs equal the original's in inference mode up to float32 rounding. A fused dense layer
loses its ``kernel_regularizer`` and ``kernel_constraint`` in the folded spec: its weights are no longer the
ones they were trained on (and the reported loss would otherwise include a penalty on different weights).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_weights

from trainwell.errors import ConfigError
from trainwell.nn.build import ModelSpec, build_model
from trainwell.nn.layers import BatchNormSpec, DenseSpec, DropoutSpec, FlattenSpec, expand


def bn_scale_shift(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(x) = s ⊙ x + t`` in inference mode; a missing γ counts as 1 and β as 0
    (Keras's ``scale = false`` / ``center = false``)."""
    gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma * torch.rsqrt(bn.running_var + bn.eps)
    return scale, beta - bn.running_mean * scale


def fuse_bn_linear_weights(
    scale: torch.Tensor, shift: torch.Tensor, linear_w: torch.Tensor, linear_b: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer applied after the affine map ``x ↦ scale ⊙ x + shift`` (an inference-mode BN), as one
    linear layer: ``W (s ⊙ x + t) + b = (W diag(s)) x + (W t + b)``.

    Written by hand because ``torch.nn.utils.fusion`` fuses BN only *after* a layer. ``linear_w`` is torch's
    ``(out, in)`` weight; ``scale`` and ``shift`` have ``in`` entries.
    """
    if linear_w.shape[1] != scale.shape[0]:
        raise ValueError(
            f"a linear layer with {linear_w.shape[1]} inputs cannot follow a BN of {scale.shape[0]} features"
        )
    bias = linear_b if linear_b is not None else torch.zeros(linear_w.shape[0], dtype=linear_w.dtype)
    return linear_w * scale.unsqueeze(0), bias + linear_w @ shift


@dataclass
class _Pending:
    """A BN (or several) waiting for the next dense layer: ``x ↦ scale ⊙ x + shift`` and where it came from."""

    scale: torch.Tensor
    shift: torch.Tensor
    name: str


def _leaf_children(model: nn.Sequential, spec: ModelSpec) -> list[tuple[str, nn.Module]]:
    children = [(n, m) for n, m in model.named_children() if not n.startswith("output_")]
    if len(children) != len(expand(spec.layers)):
        raise ValueError(
            f"the model has {len(children)} layers but its spec {len(expand(spec.layers))}: "
            "give the spec the model was built from"
        )
    return children


@torch.no_grad()
def fold_batch_norms(
    model: nn.Sequential, spec: ModelSpec, input_shape: tuple[int, ...]
) -> tuple[nn.Sequential, ModelSpec]:
    """A copy of ``model`` with every BN layer folded into its neighbouring dense layer, and its spec.

    ``model`` must be in inference mode (``model.eval()``), like ``torch.nn.utils.fusion.fuse_linear_bn_eval``
    requires, and built from ``spec`` for per-sample inputs of ``input_shape``. A BN that has no dense layer
    to fold into (one after a nonlinear activation with no dense layer after it, or with an activation
    between it and the next dense layer) is an error that names it.
    """
    if model.training:
        raise ValueError(
            "fold_batch_norms needs a model in inference mode: call model.eval() first (BN folding "
            "uses the moving statistics)"
        )
    leaves = expand(spec.layers)
    children = _leaf_children(model, spec)
    new_leaves: list = []
    fused: dict[
        str, tuple[torch.Tensor, torch.Tensor]
    ] = {}  # dense child name -> (W, b) for the folded model
    pending: _Pending | None = None
    shape = tuple(int(d) for d in input_shape)
    prev_dense: tuple[str, DenseSpec] | None = (
        None  # the directly preceding layer, when it is a linear dense one
    )

    for leaf, (name, module) in zip(leaves, children, strict=True):
        if isinstance(leaf, BatchNormSpec):
            if prev_dense is not None and pending is None:
                dense_name, dense_spec = prev_dense
                w, b = fused.get(dense_name) or _dense_weights(model, dense_name)
                gamma = module.weight if module.weight is not None else torch.ones_like(module.running_mean)
                beta = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
                w, b = fuse_linear_bn_weights(
                    w, b, module.running_mean, module.running_var, module.eps, gamma, beta
                )
                fused[dense_name] = (w.detach(), b.detach())
                new_leaves[-1] = _fused_spec(dense_spec)
                continue  # the BN is gone; the dense layer is still linear, so a second BN could follow
            scale, shift = bn_scale_shift(module)
            if pending is not None:  # BN after BN: compose the two affine maps
                scale, shift = pending.scale * scale, pending.shift * scale + shift
            pending = _Pending(scale, shift, name if pending is None else pending.name)
            continue
        prev_dense = None
        if isinstance(leaf, DenseSpec):
            if pending is not None:
                w, b = _dense_weights(model, name)
                fused[name] = tuple(
                    t.detach() for t in fuse_bn_linear_weights(pending.scale, pending.shift, w, b)
                )
                leaf = _fused_spec(leaf)
                pending = None
            if leaf.activation.name == "linear":
                prev_dense = (name, leaf)
            shape = (*shape[:-1], leaf.units)
        elif isinstance(leaf, FlattenSpec):
            if pending is not None:  # channels-last flatten: feature i is channel i mod C
                repeats = math.prod(shape[:-1])
                pending = _Pending(pending.scale.repeat(repeats), pending.shift.repeat(repeats), pending.name)
            shape = (math.prod(shape),)
        elif isinstance(leaf, DropoutSpec) and not leaf.mc:
            pass  # the identity in inference mode: a pending BN passes through
        elif pending is not None:
            raise ConfigError(
                f"cannot fold {pending.name}: {name} stands between it and the next dense layer, and the BN "
                'cannot move across it; put the BN right after a dense layer with activation "linear" '
                "(and the activation after the BN), or right before a dense layer"
            )
        new_leaves.append(leaf)
    if pending is not None:
        raise ConfigError(
            f"cannot fold {pending.name}: no dense layer follows it, and the layer before it is not a dense layer "
            'with activation "linear"; a BN can be folded only into a neighbouring dense layer'
        )

    new_spec = spec.model_copy(update={"layers": new_leaves})
    dtype = next(model.parameters()).dtype  # float64 models fold in float64 (the exactness test does)
    folded = build_model(new_spec, input_shape).to(dtype)
    old = model.state_dict()
    bn_names = {name for name, m in children if isinstance(m, nn.BatchNorm1d)}
    state = OrderedDict((k, v) for k, v in old.items() if k.split(".", 1)[0] not in bn_names)
    for dense_name, (w, b) in fused.items():
        state[f"{dense_name}.linear.weight"] = w
        state[f"{dense_name}.linear.bias"] = b
    folded.load_state_dict(state)
    return folded.eval(), new_spec


def _dense_weights(model: nn.Sequential, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    linear = getattr(model, name).linear
    return linear.weight.detach(), (linear.bias.detach() if linear.bias is not None else None)


def _fused_spec(spec: DenseSpec) -> DenseSpec:
    return spec.model_copy(update={"use_bias": True, "kernel_regularizer": None, "kernel_constraint": None})


def count_batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
