"""Learning-rate schedules (``train.schedule``): pure functions of the step, applied by one small callback.

The chapter's schedules, with its symbols as keys; ``t`` counts epochs (``unit = "epoch"``, the default) or
optimizer steps (``unit = "step"``), from 0; η0 is the optimizer's ``learning_rate``:

- ``power``: ``η(t) = η0 / (1 + t/s)^c``;
- ``exponential``: ``η(t) = η0 · 0.1^(t/s)``;
- ``piecewise_constant``: ``values[i]`` where ``i`` is the number of ``boundaries`` ≤ t;
- ``performance``: reduce on plateau (Keras's ``ReduceLROnPlateau``: multiply the LR by ``factor`` when
  ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs), run by torch's
  ``ReduceLROnPlateau`` with the settings that make it act exactly as Keras's;
- ``one_cycle`` (Smith 2018, "A disciplined approach to neural network hyper-parameters"; the chapter's
  ``OneCycleScheduler``): per step, the LR rises linearly from ``start_lr`` (η_max/10) to ``max_lr`` over the
  first half of the cycle, falls back over the second half, and drops linearly to ``end_lr`` (start/1000)
  over the last ``end_fraction`` of the steps; the momentum (SGD/RMSprop ``momentum``, Adam-family β1)
  moves the opposite way, ``max_momentum → base_momentum → max_momentum``, then stays.

:func:`build_schedule` turns a spec into a :class:`StepSchedule` — ``lr(step)`` and ``momentum(step)`` for
optimizer steps 0, 1, 2, …, defined (clamped) past the end — so a schedule can be plotted without training.
:class:`LearningRateScheduler` writes it into ``optimizer.param_groups`` before every step;
:class:`ReduceLROnPlateau` acts at epoch ends; :class:`StepRecorder` writes ``steps.csv`` (``step, lr,
momentum``) so every step's values can be checked.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from trainwell.errors import ConfigError
from trainwell.io import write_text
from trainwell.spec import Spec
from trainwell.train.callbacks import METRIC_MODES, Callback
from trainwell.train.optimizers import built_from, get_momentum, momentum_key, set_momentum

STEPS_CSV = "steps.csv"


# --- specs -----------------------------------------------------------------------------------------------


class _Timed(Spec):
    unit: Literal["epoch", "step"] = "epoch"  # what t (and s, boundaries) counts


class PowerSpec(_Timed):
    name: Literal["power"]
    s: float = Field(gt=0)
    c: float = Field(default=1.0, gt=0)


class ExponentialSpec(_Timed):
    name: Literal["exponential"]
    s: float = Field(gt=0)


class PiecewiseConstantSpec(_Timed):
    name: Literal["piecewise_constant"]
    boundaries: list[float] = Field(min_length=1)
    values: list[float] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> PiecewiseConstantSpec:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"values needs one more entry than boundaries (a value before the first boundary "
                f"and one after each): got {len(self.boundaries)} boundaries and "
                f"{len(self.values)} values"
            )
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError(f"boundaries must increase strictly (got {self.boundaries})")
        if self.boundaries[0] <= 0:
            raise ValueError(
                f"boundaries must be > 0 (got {self.boundaries}); the first value applies from t = 0"
            )
        if any(not v > 0 for v in self.values):
            raise ValueError(f"values are learning rates and must be > 0 (got {self.values})")
        return self


class PerformanceSpec(Spec):
    """Keras's ``ReduceLROnPlateau`` arguments and defaults (the chapter uses factor 0.5, patience 5)."""

    name: Literal["performance"]
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=1e-4, ge=0)  # absolute, as in Keras (torch's default is relative)
    cooldown: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"


class OneCycleSpec(Spec):
    name: Literal["one_cycle"]
    max_lr: float = Field(gt=0)
    start_lr: float | None = Field(default=None, gt=0)  # default max_lr / 10
    end_lr: float | None = Field(default=None, gt=0)  # default start_lr / 1000
    end_fraction: float = Field(default=0.1, gt=0, lt=0.5)  # share of the steps in the final drop
    cycle_momentum: bool = True
    max_momentum: float = Field(default=0.95, ge=0, lt=1)
    base_momentum: float = Field(default=0.85, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> OneCycleSpec:
        if self.start_lr is not None and self.start_lr >= self.max_lr:
            raise ValueError(f"start_lr ({self.start_lr}) must be below max_lr ({self.max_lr})")
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"base_momentum ({self.base_momentum}) must not exceed max_momentum "
                f"({self.max_momentum}): momentum falls while the LR rises"
            )
        return self


ScheduleSpec = Annotated[
    PowerSpec | ExponentialSpec | PiecewiseConstantSpec | PerformanceSpec | OneCycleSpec,
    Field(discriminator="name"),
]


def schedule_problem(train: Any, has_validation: bool) -> str | None:
    """What is wrong with ``train.schedule`` next to the rest of ``train`` (a config cross-check), or None."""
    schedule = train.schedule
    if schedule is None:
        return None
    if train.optimizer.decay:
        return (
            f"train.optimizer.decay: Keras's decay is itself a schedule (power, per step) and cannot be "
            f"combined with train.schedule ({schedule.name}); remove decay, or use schedule "
            f'{{ name = "power", s = {1 / train.optimizer.decay:g}, unit = "step" }} instead'
        )
    if isinstance(schedule, OneCycleSpec) and train.optimizer.learning_rate == "auto":
        return (
            'train.optimizer.learning_rate: "auto" has no effect under one_cycle, which sets the LR from '
            "train.schedule.max_lr; run `trainwell lr-find CONFIG` and set max_lr to about its suggestion"
        )
    if isinstance(schedule, PerformanceSpec) and schedule.monitor.startswith("val_") and not has_validation:
        return (
            f'train.schedule.monitor: "{schedule.monitor}" needs a validation set, but '
            'data.validation_size is 0; set data.validation_size (e.g. 5000) or monitor "loss"'
        )
    return None


# --- the schedules as pure functions -----------------------------------------------------------------------


def power(t: float, lr0: float, s: float, c: float = 1.0) -> float:
    """Power scheduling: ``η(t) = η0 / (1 + t/s)^c`` (the LR halves at t = s when c = 1)."""
    return lr0 / (1.0 + t / s) ** c


def exponential(t: float, lr0: float, s: float) -> float:
    """Exponential scheduling: ``η(t) = η0 · 0.1^(t/s)`` (the LR falls tenfold every s)."""
    return lr0 * 0.1 ** (t / s)


def piecewise_constant(t: float, boundaries: Sequence[float], values: Sequence[float]) -> float:
    """``values[i]``, ``i`` = the number of boundaries ≤ t: ``values[0]`` for t < boundaries[0], ….

    The chapter's ``piecewise_constant_fn`` (``if epoch < 5: … elif epoch < 15: …``). Keras's
    ``PiecewiseConstantDecay`` keeps ``values[0]`` up to and *including* ``boundaries[0]`` (one step longer).
    """
    return values[bisect.bisect_right(boundaries, t)]


@dataclass(frozen=True)
class OneCycle:
    """The 1cycle shape over ``total`` steps: phases end at ``half``, ``2·half`` and ``total``.

    As the chapter's ``OneCycleScheduler``: ``half = (total − end_steps) // 2`` with ``end_steps`` the length
    of the final drop; linear interpolation in each phase; ``end_lr`` from ``total`` on.
    """

    total: int
    max_lr: float
    start_lr: float
    end_lr: float
    end_steps: int
    max_momentum: float
    base_momentum: float

    @property
    def half(self) -> int:
        return (self.total - self.end_steps) // 2

    def lr(self, t: float) -> float:
        h = self.half
        if t < h:
            return self.start_lr + (self.max_lr - self.start_lr) * t / h
        if t < 2 * h:
            return self.max_lr + (self.start_lr - self.max_lr) * (t - h) / h
        if t < self.total:
            return self.start_lr + (self.end_lr - self.start_lr) * (t - 2 * h) / (self.total - 2 * h)
        return self.end_lr

    def momentum(self, t: float) -> float:
        h = self.half
        if t < h:
            return self.max_momentum + (self.base_momentum - self.max_momentum) * t / h
        if t < 2 * h:
            return self.base_momentum + (self.max_momentum - self.base_momentum) * (t - h) / h
        return self.max_momentum


def one_cycle(spec: OneCycleSpec, total_steps: int) -> OneCycle:
    """The :class:`OneCycle` of ``spec`` over ``total_steps`` optimizer steps (defaults filled in)."""
    start = spec.start_lr if spec.start_lr is not None else spec.max_lr / 10
    end = spec.end_lr if spec.end_lr is not None else start / 1000
    # The chapter: last_iterations = iterations // 10 + 1; the 1e-9 keeps e.g. 0.07 · 100 from flooring to 6.
    end_steps = math.floor(total_steps * spec.end_fraction + 1e-9) + 1
    cycle = OneCycle(total_steps, spec.max_lr, start, end, end_steps, spec.max_momentum, spec.base_momentum)
    if cycle.half < 1:
        raise ConfigError(
            f"train.schedule: one_cycle needs at least {end_steps + 2} steps for its three phases, "
            f"but the run has {total_steps}; train for more epochs or use a smaller batch_size"
        )
    return cycle


@dataclass(frozen=True)
class StepSchedule:
    """A schedule as functions of the optimizer step (0, 1, 2, …): what to set before each step."""

    lr: Callable[[int], float]
    momentum: Callable[[int], float] | None = None
    stepwise: bool = True  # whether the values change within an epoch (then steps.csv records them)


def build_schedule(
    spec: Any, base_lr: float, steps_per_epoch: int, total_steps: int, cycle_momentum: bool = True
) -> StepSchedule:
    """The :class:`StepSchedule` of a pure-function ``spec`` (not ``performance``, which depends on metrics).

    ``base_lr`` is η0; ``total_steps`` the planned run (1cycle spreads over it); ``cycle_momentum = False``
    when the optimizer has no momentum to cycle.
    """
    per = steps_per_epoch if getattr(spec, "unit", "step") == "epoch" else 1
    stepwise = per == 1

    def t_of(step: int) -> int:
        return step // per

    if isinstance(spec, PowerSpec):
        return StepSchedule(lambda step: power(t_of(step), base_lr, spec.s, spec.c), stepwise=stepwise)
    if isinstance(spec, ExponentialSpec):
        return StepSchedule(lambda step: exponential(t_of(step), base_lr, spec.s), stepwise=stepwise)
    if isinstance(spec, PiecewiseConstantSpec):
        return StepSchedule(
            lambda step: piecewise_constant(t_of(step), spec.boundaries, spec.values), stepwise=stepwise
        )
    if isinstance(spec, OneCycleSpec):
        cycle = one_cycle(spec, total_steps)
        momentum = cycle.momentum if spec.cycle_momentum and cycle_momentum else None
        return StepSchedule(cycle.lr, momentum)
    raise TypeError(f"{type(spec).__name__} is not a pure-function schedule")


def _momentum_key_of(optimizer: torch.optim.Optimizer) -> Literal["momentum", "betas"] | None:
    """The registry's momentum metadata for an optimizer trainwell built; torch's rule for any other
    (``OneCycleLR`` cycles ``momentum`` when the optimizer has it, else β1 of ``betas``)."""
    spec = built_from(optimizer)
    if spec is not None:
        return momentum_key(spec)
    if "momentum" in optimizer.defaults:
        return "momentum"
    return "betas" if "betas" in optimizer.defaults else None


# --- the callbacks ----------------------------------------------------------------------------------------


class LearningRateScheduler(Callback):
    """Sets the LR (and momentum) of every param group from a pure-function schedule before each step.

    η0 is the optimizer's LR when training begins, unless given; it is part of the callback's state, so a
    resumed run (whose optimizer comes back holding a scheduled LR) continues the same curve.
    """

    def __init__(self, spec: Any, base_lr: float | None = None):
        self.spec = spec
        self.base_lr = base_lr
        self.schedule: StepSchedule | None = None
        self.key: Literal["momentum", "betas"] | None = None
        self._last: tuple[float, float | None] | None = None

    def on_train_begin(self, trainer: Any) -> None:
        optimizer = trainer.optimizer
        if self.base_lr is None:
            self.base_lr = float(optimizer.param_groups[0]["lr"])
        self.key = _momentum_key_of(optimizer)
        total = trainer.spec.epochs * trainer.steps_per_epoch
        self.schedule = build_schedule(
            self.spec, self.base_lr, trainer.steps_per_epoch, total, cycle_momentum=self.key is not None
        )
        self._last = None
        self.on_step_begin(trainer, trainer.step)

    def on_step_begin(self, trainer: Any, step: int) -> None:
        lr = self.schedule.lr(step)
        momentum = self.schedule.momentum(step) if self.schedule.momentum is not None else None
        if (lr, momentum) == self._last:
            return
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None:
                set_momentum(group, self.key, momentum)
        self._last = (lr, momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = state["base_lr"]


class ReduceLROnPlateau(Callback):
    """Performance scheduling with Keras's semantics, run by ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Keras reduces when ``wait >= patience`` and its cooldown epoch counter runs one epoch shorter; torch
    reduces when ``bad_epochs > patience``. So Keras's ``patience = p, cooldown = c`` is torch's
    ``patience = max(p − 1, 0), cooldown = max(c − 1, 0)``; Keras's absolute ``min_delta`` is torch's
    ``threshold_mode = "abs"``; ``eps = 0`` makes torch reduce whenever the LR is above ``min_lr``, as Keras
    does. ``tests/train/test_schedules.py`` checks this against a transcription of Keras's algorithm.
    """

    def __init__(self, spec: PerformanceSpec | None = None, **kwargs: Any):
        """From a spec, or from Keras's keyword arguments (``ReduceLROnPlateau(factor=0.5, patience=5)``)."""
        self.spec = spec or PerformanceSpec(name="performance", **kwargs)
        self.mode = METRIC_MODES[self.spec.monitor] if self.spec.mode == "auto" else self.spec.mode
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._pending: dict[str, Any] | None = None

    def on_train_begin(self, trainer: Any) -> None:
        s = self.spec
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            trainer.optimizer,
            mode=self.mode,
            factor=s.factor,
            patience=max(s.patience - 1, 0),
            threshold=s.min_delta,
            threshold_mode="abs",
            cooldown=max(s.cooldown - 1, 0),
            min_lr=s.min_lr,
            eps=0.0,
        )
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)
            self._pending = None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.spec.monitor)
        if value is None:
            raise ConfigError(
                f'train.schedule.monitor: "{self.spec.monitor}" is not among the epoch\'s metrics '
                f"({', '.join(sorted(logs))}); monitor one of those, or add a validation set"
            )
        self.scheduler.step(value)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler is not None else (self._pending or {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)
        else:
            self._pending = dict(state)


class StepRecorder(Callback):
    """Records the LR and momentum every optimizer step uses, and writes them to ``path`` (``steps.csv``).

    Put it after the schedule callback (it reads what that one set). The file is rewritten atomically at each
    epoch end and when training ends (rows are formatted once and kept, so a rewrite costs a file write, not
    a re-formatting of the whole run); the rows are part of the callback's state, so a resumed run's file is
    whole. ``step`` is the 0-based step number ``t`` of the schedule formulas; ``momentum`` is empty for an
    optimizer without one.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.key: Literal["momentum", "betas"] | None = None
        self.steps: list[int] = []
        self.lrs: list[float] = []
        self.momenta: list[float] = []
        self._lines: list[str] = []  # the CSV lines of the first len(_lines) rows

    def on_train_begin(self, trainer: Any) -> None:
        self.key = _momentum_key_of(trainer.optimizer)
        # rows past the step we (re)start from belong to a part of the run that a resume has undone
        keep = bisect.bisect_left(self.steps, trainer.step)
        del self.steps[keep:], self.lrs[keep:], self.momenta[keep:], self._lines[keep:]

    def on_step_begin(self, trainer: Any, step: int) -> None:
        group = trainer.optimizer.param_groups[0]
        momentum = get_momentum(group, self.key)
        self.steps.append(step)
        self.lrs.append(float(group["lr"]))
        self.momenta.append(math.nan if momentum is None else momentum)

    def csv_text(self) -> str:
        for i in range(len(self._lines), len(self.steps)):
            momentum = self.momenta[i]
            self._lines.append(
                f"{self.steps[i]},{self.lrs[i]!r},{'' if math.isnan(momentum) else repr(momentum)}\n"
            )
        return "step,lr,momentum\n" + "".join(self._lines)

    def write(self) -> None:
        if self.path is not None:
            write_text(self.path, self.csv_text())

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        self.write()

    def on_train_end(self, trainer: Any) -> None:
        self.write()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": torch.tensor(self.steps, dtype=torch.int64),
            "lrs": torch.tensor(self.lrs, dtype=torch.float64),
            "momenta": torch.tensor(self.momenta, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"].tolist()
        self.lrs = state["lrs"].tolist()
        self.momenta = state["momenta"].tolist()
        self._lines = []


def schedule_callbacks(spec: Any, run_dir: Path | None = None, record_steps: bool = False) -> list[Callback]:
    """The callbacks that run ``spec`` (a :data:`ScheduleSpec` or None) in ``fit``, in order.

    A step-wise schedule (``unit = "step"``, ``one_cycle``) or ``record_steps`` (Keras's ``decay``, also per
    step) adds a :class:`StepRecorder` writing ``run_dir / steps.csv``.
    """
    callbacks: list[Callback] = []
    stepwise = record_steps
    if isinstance(spec, PerformanceSpec):
        callbacks.append(ReduceLROnPlateau(spec))
    elif spec is not None:
        callbacks.append(LearningRateScheduler(spec))
        stepwise = stepwise or isinstance(spec, OneCycleSpec) or spec.unit == "step"
    if stepwise:
        callbacks.append(StepRecorder(run_dir / STEPS_CSV if run_dir is not None else None))
    return callbacks
