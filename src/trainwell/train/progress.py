"""A progress display for training, on stderr: a live bar on a terminal, one line per epoch elsewhere."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trainwell.train.callbacks import Callback

# Reading the running loss back is a host synchronisation; once per this many steps costs nothing measurable.
REFRESH_EVERY_STEPS = 50


def _format(logs: dict[str, float]) -> str:
    parts = [f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
    parts.append(f"{logs['seconds']:.1f}s")
    return " · ".join(parts)


class ProgressBar(Callback):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(file=sys.stderr)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, trainer: Any) -> None:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(
                "train", total=trainer.steps_per_epoch, epoch=epoch + 1, epochs=trainer.spec.epochs, metrics=""
            )

    def on_step_end(self, trainer: Any, step: int) -> None:
        if self.progress is None or step % REFRESH_EVERY_STEPS:
            return
        seen = max(1, trainer.epoch_seen)
        metrics = (f"loss {trainer.epoch_loss_sum.item() / seen:.4f} "
                   f"accuracy {trainer.epoch_correct.item() / seen:.4f}")
        done = step - trainer.epoch * trainer.steps_per_epoch
        self.progress.update(self.task, completed=done, metrics=metrics)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.remove_task(self.task)
        self.console.print(f"epoch {epoch + 1}/{trainer.spec.epochs}  {_format(logs)}", highlight=False,
                           soft_wrap=True)

    def on_train_end(self, trainer: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
