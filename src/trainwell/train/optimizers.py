"""Optimizers by Keras name, with Keras's parameter names and defaults, on ``torch.optim``.

``build_optimizer(spec, params)`` returns a plain ``torch.optim.Optimizer``. Gradient clipping
(``clipvalue``, ``clipnorm``, ``global_clipnorm``, as in Keras at most one of them) is attached to it as a step
pre-hook, so it takes effect in ``optimizer.step()`` wherever that is called, inside trainwell's loop or not.

Where torch's update differs from Keras's in more than naming, trainwell follows torch's update rule with
Keras's default values; ``docs/keras-vs-torch.md`` lists each difference (G6–G10) and its size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from trainwell.registry import Registry
from trainwell.spec import Spec

# Keras's defaults shared by the optimizers that have them.
KERAS_LEARNING_RATE = 1e-3
KERAS_EPSILON = 1e-7


class _Common(Spec):
    learning_rate: float | Literal["auto"] = KERAS_LEARNING_RATE
    clipvalue: float | None = Field(default=None, gt=0)
    clipnorm: float | None = Field(default=None, gt=0)
    global_clipnorm: float | None = Field(default=None, gt=0)

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not value > 0:
            raise ValueError("learning_rate must be > 0 (or \"auto\" to use the LR finder)")
        return value

    @model_validator(mode="after")
    def _check_common(self) -> _Common:
        clips = [k for k in ("clipvalue", "clipnorm", "global_clipnorm") if getattr(self, k) is not None]
        if len(clips) > 1:
            raise ValueError(f"set at most one of clipvalue, clipnorm, global_clipnorm (got {', '.join(clips)})")
        return self


class SGDSpec(_Common):
    name: Literal["sgd"]
    learning_rate: float | Literal["auto"] = 0.01  # Keras's SGD default
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov = true needs momentum > 0")
        return self


class AdagradSpec(_Common):
    name: Literal["adagrad"]
    initial_accumulator_value: float = Field(default=0.1, ge=0)
    epsilon: float = Field(default=KERAS_EPSILON, gt=0)


class RMSpropSpec(_Common):
    name: Literal["rmsprop"]
    rho: float = Field(default=0.9, ge=0, lt=1)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    epsilon: float = Field(default=KERAS_EPSILON, gt=0)
    centered: bool = False


class AdamFamilySpec(_Common):
    name: Literal["adam", "adamax", "nadam"]
    beta_1: float = Field(default=0.9, ge=0, lt=1)
    beta_2: float = Field(default=0.999, ge=0, lt=1)
    epsilon: float = Field(default=KERAS_EPSILON, gt=0)


class AdamWSpec(AdamFamilySpec):
    name: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: float = Field(default=0.004, ge=0)  # Keras's AdamW default (torch's is 0.01)


OptimizerSpec = Annotated[
    SGDSpec | AdagradSpec | RMSpropSpec | AdamFamilySpec | AdamWSpec, Field(discriminator="name")
]


@dataclass(frozen=True)
class OptimizerEntry:
    """How to build one optimizer, and which of its hyperparameters is the momentum (for 1cycle)."""

    factory: Callable[[Any, list, float], torch.optim.Optimizer]
    # "momentum": param_group["momentum"]; "betas": param_group["betas"][0]; None: no momentum to cycle.
    momentum: Literal["momentum", "betas"] | None


def _betas(s: AdamFamilySpec) -> tuple[float, float]:
    return (s.beta_1, s.beta_2)


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", {
    "sgd": OptimizerEntry(
        lambda s, p, lr: torch.optim.SGD(p, lr=lr, momentum=s.momentum, nesterov=s.nesterov, foreach=True),
        "momentum"),
    "adagrad": OptimizerEntry(
        lambda s, p, lr: torch.optim.Adagrad(p, lr=lr, initial_accumulator_value=s.initial_accumulator_value,
                                             eps=s.epsilon, foreach=True),
        None),
    "rmsprop": OptimizerEntry(
        lambda s, p, lr: torch.optim.RMSprop(p, lr=lr, alpha=s.rho, eps=s.epsilon, momentum=s.momentum,
                                             centered=s.centered, foreach=True),
        "momentum"),
    "adam": OptimizerEntry(
        lambda s, p, lr: torch.optim.Adam(p, lr=lr, betas=_betas(s), eps=s.epsilon, foreach=True), "betas"),
    "adamax": OptimizerEntry(
        lambda s, p, lr: torch.optim.Adamax(p, lr=lr, betas=_betas(s), eps=s.epsilon, foreach=True), "betas"),
    # torch's NAdam uses Keras 2's momentum schedule 0.96^(0.004·t) (momentum_decay = 0.004): the chapter's era.
    "nadam": OptimizerEntry(
        lambda s, p, lr: torch.optim.NAdam(p, lr=lr, betas=_betas(s), eps=s.epsilon, momentum_decay=4e-3,
                                           foreach=True),
        "betas"),
    "adamw": OptimizerEntry(
        lambda s, p, lr: torch.optim.AdamW(p, lr=lr, betas=_betas(s), eps=s.epsilon,
                                           weight_decay=s.weight_decay, foreach=True),
        "betas"),
})


def _clip_hook(spec: _Common) -> Callable | None:
    if spec.clipvalue is not None:
        value = spec.clipvalue

        def clip(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            torch.nn.utils.clip_grad_value_(_grads_of(opt), value, foreach=True)
    elif spec.clipnorm is not None:
        norm = spec.clipnorm

        def clip(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            # Keras's clipnorm clips each gradient tensor by its own norm (torch's clip_grad_norm_ is global).
            for p in _grads_of(opt):
                torch.nn.utils.clip_grad_norm_(p, norm)
    elif spec.global_clipnorm is not None:
        norm = spec.global_clipnorm

        def clip(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            torch.nn.utils.clip_grad_norm_(_grads_of(opt), norm, foreach=True)
    else:
        return None
    return clip


def _grads_of(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"] if p.grad is not None]


def build_optimizer(spec: Spec | dict, params: Iterable[torch.nn.Parameter] | Iterable[dict],
                    learning_rate: float | None = None) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer for ``params`` as ``spec`` says, with its clipping attached.

    ``learning_rate`` overrides the spec's (needed when the spec says ``"auto"``: the LR finder's result).
    """
    if isinstance(spec, dict):
        from pydantic import TypeAdapter

        spec = TypeAdapter(OptimizerSpec).validate_python(spec)
    lr = spec.learning_rate if learning_rate is None else learning_rate
    if lr == "auto":
        raise ValueError("learning_rate is \"auto\": find it first (trainwell lr-find) and pass learning_rate")
    entry = OPTIMIZERS[spec.name]
    optimizer = entry.factory(spec, list(params), float(lr))
    hook = _clip_hook(spec)
    if hook is not None:
        optimizer.register_step_pre_hook(hook)
    return optimizer


def momentum_key(spec: Spec) -> str | None:
    """Which param-group key holds the momentum of ``spec``'s optimizer (see :class:`OptimizerEntry`)."""
    return OPTIMIZERS[spec.name].momentum
