"""Optimizers by Keras name, with Keras's parameter names and defaults, on ``torch.optim``.

``build_optimizer(spec, params)`` returns a plain ``torch.optim.Optimizer``; two Keras options ride on it as
step hooks, so they take effect in ``optimizer.step()`` wherever that is called, inside trainwell's loop or not:

- gradient clipping (``clipvalue``, ``clipnorm``, ``global_clipnorm``; as in Keras at most one of them), a
  step pre-hook using ``torch.nn.utils``;
- Keras's legacy ``decay`` (power scheduling per update, ``η_t = η0 / (1 + decay · t)`` with ``t`` the number
  of updates already made), a step post-hook that sets the LR for the next update.

The update rules are torch's; where they differ from Keras's in more than naming (the place of ε in Adam,
Adamax, RMSprop and AdaGrad; where the LR enters SGD's momentum), trainwell follows torch's rule with Keras's
default values. ``docs/keras-vs-torch.md`` lists each difference (G6–G11, G18, G23) and its size, and
``tests/train/test_optimizers.py`` checks every update against the chapter's formulas.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from trainwell.errors import ConfigError
from trainwell.registry import Registry
from trainwell.spec import Spec

# Keras's defaults shared by the optimizers that have them.
KERAS_LEARNING_RATE = 1e-3
KERAS_EPSILON = 1e-7
# Nadam's momentum schedule μ_t = β1 · (1 − ½ · 0.96^(ψ·t)) with ψ = 0.004: Keras 2's ``schedule_decay``
# (the chapter's era) and torch's ``momentum_decay`` default. Keras 3 dropped ψ (G9).
NADAM_MOMENTUM_DECAY = 4e-3


class _Common(Spec):
    learning_rate: float | Literal["auto"] = KERAS_LEARNING_RATE
    clipvalue: float | None = Field(default=None, gt=0)
    clipnorm: float | None = Field(default=None, gt=0)
    global_clipnorm: float | None = Field(default=None, gt=0)
    decay: float = Field(default=0.0, ge=0)  # Keras 2's per-update power decay; 0 = off

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not value > 0:
            raise ValueError('learning_rate must be > 0 (or "auto" to use the LR finder)')
        return value

    @model_validator(mode="after")
    def _check_common(self) -> _Common:
        clips = [k for k in ("clipvalue", "clipnorm", "global_clipnorm") if getattr(self, k) is not None]
        if len(clips) > 1:
            raise ValueError(
                f"set at most one of clipvalue, clipnorm, global_clipnorm (got {', '.join(clips)})"
            )
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


class AdamaxNadamSpec(_Common):
    name: Literal["adamax", "nadam"]
    beta_1: float = Field(default=0.9, ge=0, lt=1)
    beta_2: float = Field(default=0.999, ge=0, lt=1)
    epsilon: float = Field(default=KERAS_EPSILON, gt=0)


class AdamSpec(AdamaxNadamSpec):
    name: Literal["adam"]  # type: ignore[assignment]
    amsgrad: bool = False


class AdamWSpec(AdamSpec):
    name: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: float = Field(default=0.004, ge=0)  # Keras's AdamW default (torch's is 0.01)


OptimizerSpec = Annotated[
    SGDSpec | AdagradSpec | RMSpropSpec | AdamSpec | AdamaxNadamSpec | AdamWSpec, Field(discriminator="name")
]


@dataclass(frozen=True)
class OptimizerEntry:
    """How to build one optimizer, and which of its hyperparameters is the momentum (for 1cycle)."""

    factory: Callable[[Any, list, float], torch.optim.Optimizer]
    # "momentum": param_group["momentum"]; "betas": param_group["betas"][0] (Adam's β1); None: nothing to cycle.
    momentum: Literal["momentum", "betas"] | None


def _betas(s: AdamaxNadamSpec) -> tuple[float, float]:
    return (s.beta_1, s.beta_2)


OPTIMIZERS: Registry[OptimizerEntry] = Registry(
    "optimizer",
    {
        "sgd": OptimizerEntry(
            lambda s, p, lr: torch.optim.SGD(
                p, lr=lr, momentum=s.momentum, nesterov=s.nesterov, foreach=True
            ),
            "momentum",
        ),
        "adagrad": OptimizerEntry(
            lambda s, p, lr: torch.optim.Adagrad(
                p, lr=lr, initial_accumulator_value=s.initial_accumulator_value, eps=s.epsilon, foreach=True
            ),
            None,
        ),
        "rmsprop": OptimizerEntry(
            lambda s, p, lr: torch.optim.RMSprop(
                p, lr=lr, alpha=s.rho, eps=s.epsilon, momentum=s.momentum, centered=s.centered, foreach=True
            ),
            "momentum",
        ),
        "adam": OptimizerEntry(
            lambda s, p, lr: torch.optim.Adam(
                p, lr=lr, betas=_betas(s), eps=s.epsilon, amsgrad=s.amsgrad, foreach=True
            ),
            "betas",
        ),
        "adamax": OptimizerEntry(
            lambda s, p, lr: torch.optim.Adamax(p, lr=lr, betas=_betas(s), eps=s.epsilon, foreach=True),
            "betas",
        ),
        "nadam": OptimizerEntry(
            lambda s, p, lr: torch.optim.NAdam(
                p, lr=lr, betas=_betas(s), eps=s.epsilon, momentum_decay=NADAM_MOMENTUM_DECAY, foreach=True
            ),
            "betas",
        ),
        "adamw": OptimizerEntry(
            lambda s, p, lr: torch.optim.AdamW(
                p,
                lr=lr,
                betas=_betas(s),
                eps=s.epsilon,
                amsgrad=s.amsgrad,
                weight_decay=s.weight_decay,
                foreach=True,
            ),
            "betas",
        ),
    },
)


def _grads_of(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"] if p.grad is not None]


def _clip_hook(spec: _Common) -> Callable | None:
    """The clipping pre-hook ``spec`` asks for (Keras's semantics), or None."""
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


def apply_decay(optimizer: torch.optim.Optimizer) -> None:
    """Keras 2's ``decay``, after one update: ``lr ← initial_lr / (1 + decay · iterations)``.

    Written by hand: torch's only analogue, ``Adagrad(lr_decay=...)``, exists for one optimizer, and a
    ``LambdaLR`` would need its own ``step()`` calls and state outside the optimizer. The count lives in the
    param group (``decay_iterations``), so it is saved and restored with ``optimizer.state_dict()``. Groups
    without ``decay`` are left alone. The compiled training step calls this too, after its own update.
    """
    for group in optimizer.param_groups:
        decay = group.get("decay", 0.0)
        if decay:
            group["decay_iterations"] += 1
            group["lr"] = group["initial_lr"] / (1.0 + decay * group["decay_iterations"])


def _decay_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    apply_decay(optimizer)


# The spec each optimizer was built from, for the compiled training step (which replays its update, clipping
# and decay in one graph). Weak keys: an optimizer that is dropped takes its entry with it.
_BUILT_FROM: weakref.WeakKeyDictionary[torch.optim.Optimizer, Any] = weakref.WeakKeyDictionary()


def validate_optimizer_spec(spec: Spec | dict, prefix: str = "optimizer") -> Any:
    """``spec`` as an :data:`OptimizerSpec`; a dict is validated, errors name ``prefix.key``."""
    if not isinstance(spec, dict):
        return spec
    try:
        return TypeAdapter(OptimizerSpec).validate_python(spec)
    except ValidationError as e:
        from trainwell.config import format_validation_error

        raise ConfigError(format_validation_error(e, prefix=prefix, data=spec)) from None


def build_optimizer(
    spec: Spec | dict,
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    learning_rate: float | None = None,
) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer for ``params`` as ``spec`` says, with its clipping and decay attached.

    ``learning_rate`` overrides the spec's (needed when the spec says ``"auto"``: pass the LR finder's result,
    :func:`trainwell.train.lr_finder.find_lr`).
    """
    spec = validate_optimizer_spec(spec)
    lr = spec.learning_rate if learning_rate is None else learning_rate
    if lr == "auto":
        raise ConfigError(
            'optimizer.learning_rate: "auto" must be resolved by the LR finder before the optimizer is built; '
            "`trainwell train` does that, from Python call trainwell.train.lr_finder.find_lr and pass "
            "learning_rate=result.suggested_lr"
        )
    if not float(lr) > 0:
        raise ConfigError(f"optimizer.learning_rate: must be > 0 (got {lr!r})")
    optimizer = OPTIMIZERS[spec.name].factory(spec, list(params), float(lr))
    hook = _clip_hook(spec)
    if hook is not None:
        optimizer.register_step_pre_hook(hook)
    if spec.decay:
        for group in optimizer.param_groups:
            group.update(decay=spec.decay, initial_lr=group["lr"], decay_iterations=0)
        optimizer.register_step_post_hook(_decay_hook)
    _BUILT_FROM[optimizer] = spec
    return optimizer


def built_from(optimizer: torch.optim.Optimizer) -> Any | None:
    """The spec :func:`build_optimizer` built ``optimizer`` from, or None for an optimizer made elsewhere."""
    return _BUILT_FROM.get(optimizer)


def momentum_key(spec: Spec) -> Literal["momentum", "betas"] | None:
    """Which param-group key holds the momentum of ``spec``'s optimizer (see :class:`OptimizerEntry`)."""
    return OPTIMIZERS[spec.name].momentum


def get_momentum(group: dict[str, Any], key: Literal["momentum", "betas"] | None) -> float | None:
    """The momentum (SGD/RMSprop ``momentum``, Adam-family β1) of a param group, or None."""
    if key == "momentum":
        return float(group["momentum"])
    if key == "betas":
        return float(group["betas"][0])
    return None


def set_momentum(group: dict[str, Any], key: Literal["momentum", "betas"] | None, value: float) -> None:
    """Write ``value`` as the momentum of a param group (β1 for the Adam family); no-op without one."""
    if key == "momentum":
        group["momentum"] = value
    elif key == "betas":
        group["betas"] = (value, group["betas"][1])
