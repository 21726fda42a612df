"""Callbacks: everything optional in training acts through these hooks, so the loop stays short.

The loop calls the hooks a callback defines; the step hooks (``on_step_begin``/``on_step_end``) are called only
for callbacks that override them, so a run without step-wise callbacks pays nothing per step. A callback that
must survive a resume implements ``state_dict`` / ``load_state_dict`` (tensors, numbers, strings, lists and
dicts only, so checkpoints load with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from trainwell.spec import Spec

# Which way is better for each metric trainwell records. This is knowledge of the metric, not a guess from its
# name: an unknown metric has no entry and needs an explicit mode.
METRIC_MODES: dict[str, Literal["min", "max"]] = {
    "loss": "min",
    "accuracy": "max",
    "val_loss": "min",
    "val_accuracy": "max",
}


class Callback:
    """Base class: override the hooks you need. ``trainer`` is the loop's :class:`~trainwell.train.loop.Trainer`."""

    def on_train_begin(self, trainer: Any) -> None: ...

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None: ...

    def on_step_begin(self, trainer: Any, step: int) -> None: ...

    def on_step_end(self, trainer: Any, step: int) -> None: ...

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Any) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` defines its own ``hook`` (so the loop must call it)."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class EarlyStoppingSpec(Spec):
    """Keras's ``EarlyStopping`` arguments, with Keras's defaults."""

    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    patience: int = Field(default=0, ge=0)
    min_delta: float = Field(default=0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = Field(default=0, ge=0)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs, exactly as Keras 3 defines it.

    - An epoch improves when its value beats the best so far by more than ``min_delta``.
    - ``wait`` counts epochs since the last improvement; training stops at the end of the first epoch
      (other than the first) where ``wait >= patience``.
    - With ``restore_best_weights``, the weights of the best epoch are restored when training ends, whether
      or not early stopping triggered (Keras 3; older Keras restored only when it stopped training itself).
    - With a ``baseline``, ``wait`` is reset only by a value that also beats the baseline.
    """

    def __init__(self, model: nn.Module, spec: EarlyStoppingSpec | None = None, **kwargs: Any):
        spec = spec or EarlyStoppingSpec(**kwargs)
        self.model = model
        self.spec = spec
        self.mode = METRIC_MODES[spec.monitor] if spec.mode == "auto" else spec.mode
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _improves(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value < reference - self.spec.min_delta
        return value > reference + self.spec.min_delta

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.spec.monitor)
        if value is None or epoch < self.spec.start_from_epoch:
            return
        if self.spec.restore_best_weights and self.best_weights is None:
            self.best_weights = self._snapshot()
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(value, self.best):
            self.best = value
            self.best_epoch = epoch
            if self.spec.restore_best_weights:
                self.best_weights = self._snapshot()
            if self.spec.baseline is None or self._improves(value, self.spec.baseline):
                self.wait = 0
            return
        if self.wait >= self.spec.patience and epoch > 0:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer: Any) -> None:
        if self.spec.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = state["wait"]
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_weights = state["best_weights"]
