"""TensorBoard logging: each epoch's metrics written as TensorBoard scalars, laid out as Keras's callback does.

``RUN/tb/train`` holds ``epoch_loss``, ``epoch_accuracy``, ``epoch_learning_rate`` and ``epoch_seconds``;
``RUN/tb/validation`` holds ``epoch_loss`` and ``epoch_accuracy`` of the validation set, so TensorBoard draws
the training and validation curves of a metric on one chart (``tensorboard --logdir runs``). The step of each
value is the epoch number as in ``history.csv`` (1 for the first epoch).

It needs the ``tensorboard`` package (a dev dependency of trainwell); :func:`tensorboard_available` says
whether it is installed, and runs add this callback only then. On a resumed run, the events of the epochs
after the checkpoint (written before a crash, then trained again) are purged, so no epoch appears twice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from trainwell.train.callbacks import Callback

TB_DIR = "tb"
# history.csv column → (TensorBoard run, tag); Keras's names, so a Keras user's dashboards read the same.
SCALARS = {
    "loss": ("train", "epoch_loss"),
    "accuracy": ("train", "epoch_accuracy"),
    "lr": ("train", "epoch_learning_rate"),
    "seconds": ("train", "epoch_seconds"),
    "val_loss": ("validation", "epoch_loss"),
    "val_accuracy": ("validation", "epoch_accuracy"),
}


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which torch's ``SummaryWriter`` needs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoard(Callback):
    """Write every epoch's metrics to TensorBoard event files under ``log_dir`` (``RUN/tb``)."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.writers: dict[str, Any] = {}

    def _writer(self, run: str, purge_step: int | None) -> Any:
        if run not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[run] = SummaryWriter(str(self.log_dir / run), purge_step=purge_step)
        return self.writers[run]

    def on_train_begin(self, trainer: Any) -> None:
        # trainer.epoch is the number of epochs already done (more than 0 on resume); the next value logged has
        # step trainer.epoch + 1, and anything at or after it is a leftover of the interrupted attempt.
        purge = trainer.epoch + 1 if trainer.epoch > 0 else None
        for run in sorted({run for run, _ in SCALARS.values()}):
            self._writer(run, purge)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        step = int(logs.get("epoch", epoch + 1))
        for key, (run, tag) in SCALARS.items():
            if key in logs:
                self._writer(run, None).add_scalar(tag, float(logs[key]), step)
        for writer in self.writers.values():
            writer.flush()  # once per epoch: a crash loses nothing that history.csv has

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
