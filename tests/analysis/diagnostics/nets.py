"""Small nets built to trigger each finding, and nets built not to, on a fixed synthetic batch."""

from __future__ import annotations

from typing import Any

import torch

from trainwell.nn.build import build_model

WIDTH = 64  # input features and units per hidden layer
CLASSES = 3


def batch(
    n: int = 512, seed: int = 0, scale: float = 1.0, shift: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` standardized Gaussian inputs (times ``scale`` plus ``shift``) with random labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, WIDTH, generator=g) * scale + shift
    return x, torch.randint(0, CLASSES, (n,), generator=g)


def dense_stack(
    activation: str, init: Any, depth: int, bias: float | None = None, units: int = WIDTH
) -> dict:
    """``depth`` dense layers of ``activation`` with kernel initializer ``init``, then a softmax output."""
    layer: dict[str, Any] = {
        "type": "dense",
        "units": units,
        "activation": activation,
        "kernel_initializer": init,
    }
    if bias is not None:
        layer["bias_initializer"] = {"name": "constant", "value": bias}
    return {
        "layers": [
            {"type": "repeat", "count": depth, "layers": [layer]},
            {"type": "dense", "units": CLASSES, "activation": "softmax"},
        ]
    }


def build(spec: dict, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return build_model(spec, (WIDTH,))


NORMAL_1 = {"name": "random_normal", "stddev": 1.0}  # the old N(0, 1) initialization
# tanh in its chaotic phase (Poole et al. 2016): σ_w² = 9 per fan-in makes each layer multiply the backward
# gradient by about 1.3, while tanh keeps the forward signal bounded: gradients explode toward the bottom.
CHAOTIC = {"name": "variance_scaling", "scale": 9.0, "mode": "fan_in", "distribution": "untruncated_normal"}
