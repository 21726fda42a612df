"""Weight initializers with Keras names and Keras semantics, on ``torch.nn.init`` primitives.

Variance scaling (Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998) draws weights with variance
``scale / fan`` where ``fan`` is the layer's fan-in, fan-out or their average:

==================  =====  =========  ===================
name                scale  mode       distribution
==================  =====  =========  ===================
glorot_uniform      1      fan_avg    uniform
glorot_normal       1      fan_avg    truncated_normal
he_uniform          2      fan_in     uniform
he_normal           2      fan_in     truncated_normal
lecun_uniform       1      fan_in     uniform
lecun_normal        1      fan_in     truncated_normal
==================  =====  =========  ===================

As in Keras (and unlike ``torch.nn.init.kaiming_normal_``), the ``*_normal`` initializers draw from a normal
truncated at two standard deviations and correct the standard deviation so that the variance after
truncation is exactly ``scale / fan``. Uniform ones draw from ``±sqrt(3 · scale / fan)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import BeforeValidator, Field, model_validator

from trainwell.registry import Registry
from trainwell.spec import Spec, name_or_table

# The standard deviation of a standard normal truncated to [-2, 2]: for a truncation at ±a,
# Var = 1 - 2a·φ(a) / (Φ(a) - Φ(-a)), so sqrt(1 - 4·φ(2) / (Φ(2) - Φ(-2))) = 0.87962566103423978. Keras divides
# the target std by it so that the truncated draw has exactly the target variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978
# Keras truncates its normal draws at this many standard deviations.
TRUNCATION_STDS = 2.0

VARIANCE_SCALING_PRESETS: dict[str, tuple[float, str, str]] = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


class VarianceScalingPreset(Spec):
    name: Literal[
        "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal"
    ]


class VarianceScaling(Spec):
    name: Literal["variance_scaling"]
    scale: float = Field(default=1.0, gt=0)
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = "truncated_normal"


class Fill(Spec):
    name: Literal["zeros", "ones"]


class Constant(Spec):
    name: Literal["constant"]
    value: float = 0.0


class RandomNormal(Spec):
    name: Literal["random_normal"]
    mean: float = 0.0
    stddev: float = Field(default=0.05, gt=0)  # Keras's default


class RandomUniform(Spec):
    name: Literal["random_uniform"]
    minval: float = -0.05  # Keras's defaults
    maxval: float = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> RandomUniform:
        if not self.minval < self.maxval:
            raise ValueError(f"minval ({self.minval}) must be below maxval ({self.maxval})")
        return self


class Orthogonal(Spec):
    name: Literal["orthogonal"]
    gain: float = 1.0


InitializerSpec = Annotated[
    VarianceScalingPreset | VarianceScaling | Fill | Constant | RandomNormal | RandomUniform | Orthogonal,
    Field(discriminator="name"),
    BeforeValidator(name_or_table),
]


def compute_fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a torch weight of ``shape``: ``(out, in, *receptive field)``.

    A torch ``Linear`` weight is ``(out, in)`` where a Keras kernel is ``(in, out)``, and a torch conv weight is
    ``(out, in, kh, kw)`` where Keras's is ``(kh, kw, in, out)``; the fans are the same as Keras's
    ``compute_fans`` gives for the Keras layout: ``fan_in = in · kh · kw``, ``fan_out = out · kh · kw``. As in
    Keras, a vector (a bias, a PReLU slope) has ``fan_in = fan_out = len`` and a scalar has fans of 1, so a
    variance-scaling ``bias_initializer`` works (torch's ``_calculate_fan_in_and_fan_out`` refuses both).
    """
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def variance_scaling_(
    tensor: torch.Tensor, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
) -> torch.Tensor:
    """Fill ``tensor`` in place with zero-mean values of variance ``scale / fan`` (Keras ``VarianceScaling``).

    ``fan`` is ``fan_in``, ``fan_out`` or ``(fan_in + fan_out) / 2`` (``mode``; see :func:`compute_fans`),
    floored at 1 as in Keras. With ``σ² = scale / fan``:

    - ``truncated_normal``: N(0, s²) truncated to ``[-2s, 2s]`` with ``s = σ / 0.87962566103423978``, so the
      truncated draw has standard deviation exactly σ;
    - ``untruncated_normal``: N(0, σ²) (what ``torch.nn.init.kaiming_normal_`` draws);
    - ``uniform``: U(-L, L) with ``L = sqrt(3 · σ²)`` (a uniform of variance L²/3 = σ²).

    Glorot & Bengio 2010 (``scale = 1, fan_avg``), He et al. 2015 (``scale = 2, fan_in``), LeCun et al. 1998
    (``scale = 1, fan_in``).
    """
    if mode not in FAN_MODES:
        raise ValueError(f"mode must be one of {', '.join(FAN_MODES)}; got {mode!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale}")
    fan_in, fan_out = compute_fans(tensor.shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, fan)
    with torch.no_grad():
        if distribution == "truncated_normal":
            std = math.sqrt(variance) / TRUNCATED_NORMAL_STD
            # trunc_normal_'s bounds are absolute values, not multiples of std.
            bound = TRUNCATION_STDS * std
            return torch.nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-bound, b=bound)
        if distribution == "untruncated_normal":
            return torch.nn.init.normal_(tensor, mean=0.0, std=math.sqrt(variance))
        limit = math.sqrt(3.0 * variance)
        return torch.nn.init.uniform_(tensor, -limit, limit)


def _preset(spec: VarianceScalingPreset, tensor: torch.Tensor) -> torch.Tensor:
    scale, mode, distribution = VARIANCE_SCALING_PRESETS[spec.name]
    return variance_scaling_(tensor, scale, mode, distribution)


INITIALIZERS: Registry[Callable[[Spec, torch.Tensor], torch.Tensor]] = Registry(
    "initializer",
    {
        **{name: _preset for name in VARIANCE_SCALING_PRESETS},
        "variance_scaling": lambda s, t: variance_scaling_(t, s.scale, s.mode, s.distribution),
        "zeros": lambda s, t: torch.nn.init.zeros_(t),
        "ones": lambda s, t: torch.nn.init.ones_(t),
        "constant": lambda s, t: torch.nn.init.constant_(t, s.value),
        "random_normal": lambda s, t: torch.nn.init.normal_(t, s.mean, s.stddev),
        "random_uniform": lambda s, t: torch.nn.init.uniform_(t, s.minval, s.maxval),
        "orthogonal": lambda s, t: torch.nn.init.orthogonal_(t, gain=s.gain),
    },
)


def initialize_(tensor: torch.Tensor, spec: Spec) -> torch.Tensor:
    """Fill ``tensor`` in place as ``spec`` says (any member of :data:`InitializerSpec`)."""
    with torch.no_grad():
        return INITIALIZERS[spec.name](spec, tensor)
