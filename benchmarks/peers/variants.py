"""The three nets of the chapter's CIFAR-10 exercise that the peer benchmark trains, described once.

Every system builds the same net from these fields: a flatten, 20 dense layers of 100 units, a 10-way
softmax. ``bn`` puts Batch Normalization between each dense layer (then without bias, as BN's β replaces it)
and its activation, as in the exercise's 8c. SELU (8d) gets LeCun initialization and standardized inputs.
Stdlib only: the Keras workers import it from their own venvs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEPTH, WIDTH, CLASSES = 20, 100, 10
BATCH_SIZE = 32
LEARNING_RATE = 5e-5  # the exercise's Nadam learning rate (examples/cifar10_baseline.toml)


@dataclass(frozen=True)
class Variant:
    name: str
    activation: str  # the Keras name
    initializer: str  # the Keras name
    bn: bool
    scaling: str  # trainwell's data.scaling: "unit" (pixels / 255) or "standardize" (per pixel)


VARIANTS: dict[str, Variant] = {
    "elu": Variant("elu", "elu", "he_normal", bn=False, scaling="unit"),
    "bn": Variant("bn", "elu", "he_normal", bn=True, scaling="unit"),
    "selu": Variant("selu", "selu", "lecun_normal", bn=False, scaling="standardize"),
}


def trainwell_layers(v: Variant) -> list[dict[str, Any]]:
    """The ``[model] layers`` of a trainwell config for variant ``v``."""
    if v.bn:
        block = [
            {"type": "dense", "units": WIDTH, "kernel_initializer": v.initializer, "use_bias": False},
            {"type": "batch_norm"},
            {"type": "activation", "name": v.activation},
        ]
    else:
        block = [
            {"type": "dense", "units": WIDTH, "activation": v.activation, "kernel_initializer": v.initializer}
        ]
    return [
        {"type": "flatten"},
        {"type": "repeat", "count": DEPTH, "layers": block},
        {"type": "dense", "units": CLASSES, "activation": "softmax"},
    ]
