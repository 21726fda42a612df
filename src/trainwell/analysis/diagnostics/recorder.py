"""Recording diagnostics during training: ``train.diagnostics = { every = "epoch" }`` → ``diagnostics.jsonl``.

:class:`DiagnosticsRecorder` is a callback. It probes the model on a fixed probe batch before the first step,
then every ``every`` steps or at the end of every epoch, and at the end of training; and it measures the
update ‖Δw‖/‖w‖ of a few steps in the middle of each interval by snapshotting the kernels in
``on_step_begin`` and comparing in ``on_step_end``. It never looks inside the training step (which may be
compiled): the probe does its own forward and backward pass (:mod:`trainwell.analysis.diagnostics.probes`).

In a run folder each record is one line of ``diagnostics.jsonl``, appended as it is taken: a log grows by
appending, where rewriting it whole (atomically, as the run's other files are) would cost quadratic time.
A crash can at worst leave a torn last line, which :func:`read_records` skips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from trainwell.analysis.diagnostics.probes import (
    PROBE_SIZE,
    kernel_norms,
    kernel_snapshot,
    probe,
    probe_batch,
    probed_layers,
    update_record,
)
from trainwell.errors import RunError
from trainwell.spec import Spec
from trainwell.train.callbacks import Callback

RECORDS_FILE = "diagnostics.jsonl"
# Steps measured per interval: the median of 5 is robust to one odd step, and 5 kernel copies cost far less
# than the probe.
UPDATE_STEPS = 5


class DiagnosticsSpec(Spec):
    """The ``train.diagnostics`` table: when to probe, and on how many training examples.

    ``every = "epoch"`` probes at the end of every epoch; ``every = N`` every N optimizer steps. The model is
    also probed before the first step and after the last. ``probe_size`` examples of the training split (a
    fixed random sample) make the probe batch.
    """

    every: Literal["epoch"] | Annotated[int, Field(ge=1)] = "epoch"
    probe_size: int = Field(default=PROBE_SIZE, ge=1)


class DiagnosticsRecorder(Callback):
    """Probe records and update records during training, kept in ``records`` and appended to ``path``.

    Args:
        x, y: the probe batch (Keras layout; moved to the model's device at the start of training).
        every: ``"epoch"`` or a number of steps between probes.
        loss: the Keras name of the training loss.
        path: the ``diagnostics.jsonl`` to append to (None: keep the records in memory only).
        update_steps: how many consecutive steps in the middle of each interval (epoch, or ``every`` steps)
            have their update measured: the middle, away from Adam's first steps (whose updates are ``lr`` per
            weight by construction) and from an epoch's start; several, so that one odd step does not decide.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        *,
        every: str | int = "epoch",
        loss: str = "sparse_categorical_crossentropy",
        path: str | Path | None = None,
        update_steps: int = UPDATE_STEPS,
    ):
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)
        self.every = every
        self.loss = loss
        self.path = Path(path) if path is not None else None
        self.update_steps = update_steps
        self.records: list[dict[str, Any]] = []
        self._layers: list = []
        self._before: dict[str, torch.Tensor] | None = None
        self._last_probe_step = -1
        self._last_norms: list[float | str] = []
        self.trainer: Any = None  # the loop's state, kept so that a probe can be taken after fit() returns

    def _emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")

    def probe_now(self, trainer: Any, moment: str) -> None:
        """Probe the model now. A second probe at the same step is skipped unless the weights have changed
        since (early stopping may restore others at the end)."""
        if trainer.step == self._last_probe_step and kernel_norms(self._layers) == self._last_norms:
            return
        self._emit(
            probe(
                trainer.model,
                self.x,
                self.y,
                loss=self.loss,
                moment=moment,
                step=trainer.step,
                epoch=trainer.epoch,
            )
        )
        self._last_probe_step = trainer.step
        self._last_norms = [
            layer["weight_norm"] for layer in self.records[-1]["layers"] if "weight_norm" in layer
        ]

    def on_train_begin(self, trainer: Any) -> None:
        self.trainer = trainer
        device = next(trainer.model.parameters()).device
        self.x, self.y = self.x.to(device), self.y.to(device)
        self._layers = probed_layers(trainer.model)
        self.probe_now(trainer, "init" if trainer.step == 0 else "resume")

    def measures_update(self, trainer: Any) -> bool:
        """Whether the step about to be taken is one whose update is measured (see ``update_steps``)."""
        if self.every == "epoch":
            position, interval = trainer.epoch_step, trainer.steps_per_epoch
        else:
            position, interval = trainer.step % self.every, self.every
        start = max(0, (interval - self.update_steps) // 2)
        return start <= position < start + self.update_steps

    def on_step_begin(self, trainer: Any, step: int) -> None:
        if self.measures_update(trainer):
            self._before = kernel_snapshot(self._layers)

    def on_step_end(self, trainer: Any, step: int) -> None:
        if self._before is not None:
            self._emit(update_record(self._before, self._layers, step, trainer.epoch))
            self._before = None
        if isinstance(self.every, int) and step % self.every == 0:
            self.probe_now(trainer, "step")

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.every == "epoch":
            self.probe_now(trainer, "epoch")

    def on_train_end(self, trainer: Any) -> None:
        self.probe_now(trainer, "end")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``diagnostics.jsonl``, in order; a torn last line (a crash mid-write) is skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RunError(f"{path}: line {i + 1} is not a JSON record; the file is damaged") from None
    return records


def recorder_from_spec(
    spec: DiagnosticsSpec, dataset: Any, loss: str, run_dir: str | Path | None
) -> DiagnosticsRecorder:
    """The recorder a config's ``train.diagnostics`` asks for, probing a fixed sample of the training split and
    appending to ``run_dir/diagnostics.jsonl`` (in memory only when ``run_dir`` is None)."""
    x, y = probe_batch(dataset.x_train, dataset.y_train, spec.probe_size)
    path = Path(run_dir) / RECORDS_FILE if run_dir is not None else None
    return DiagnosticsRecorder(x, y, every=spec.every, loss=loss, path=path)
