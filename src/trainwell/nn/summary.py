"""A model summary as Keras prints it: layers with output shapes and parameter counts.

Totals are split the way Keras counts them: Batch Normalization's moving mean and variance are
non-trainable parameters, and so is every frozen parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainwell.nn.build import count_parameters


def summarize_model(model: nn.Sequential, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """``{layers: [{name, type, output_shape, params, trainable, non_trainable, frozen}], total, trainable,
    non_trainable}`` for ``model`` on per-sample inputs of ``input_shape``."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        child.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, child in model.named_children()
    ]
    was_training = model.training
    model.eval()
    try:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        with torch.inference_mode():
            model(torch.zeros((2, *input_shape), device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    layers = []
    for name, child in model.named_children():
        counts = count_parameters(child)
        params = list(child.parameters())
        layers.append(
            {
                "name": name,
                "type": type(child).__name__,
                "output_shape": list(shapes[name]),
                "params": counts["total"],
                "trainable": counts["trainable"],
                "non_trainable": counts["non_trainable"],
                "frozen": bool(params) and not any(p.requires_grad for p in params),
            }
        )
    return {"input_shape": list(input_shape), "layers": layers, **count_parameters(model)}
