"""Terminate on NaN: stop training soon after the loss stops being a finite number, as Keras's TerminateOnNaN.

Keras checks every batch's loss. On a GPU that is a host synchronisation per step: the CPU waits for the step
to finish before it can queue the next one, and the GPU idles meanwhile. trainwell avoids it. The loop already
adds each step's loss into the epoch's running sum on the device, and a non-finite loss makes that sum
non-finite for the rest of the epoch (``nan + x = nan``, ``inf + x = inf`` for finite ``x``,
``inf - inf = nan``). So reading the sum back every ``CHECK_EVERY`` steps, and after the epoch's last step,
finds a bad step at most ``CHECK_EVERY`` steps late and names the range of steps it lies in. The reads come
at the steps where the progress bar reads the same sum, so the second read finds the device idle.

On the CPU there is no device to wait for: reading the sum back is a plain memory read (0.1 us measured,
against a step of a millisecond or more), so the sum is read after every step and the message names the exact
step.

The alternative, a flag kept on the device (``bad |= ~isfinite(loss)`` every step, read every ``CHECK_EVERY``
steps), would name the exact step on a GPU too, but adds two kernel launches to every step (15 us per step
measured on the CPU) to learn something the remedy does not depend on: the fix (a lower learning rate, scaled
inputs, clipping) is the same whichever step of the range it was.

When the check fails, :class:`TerminateOnNaN` raises :class:`NonFiniteLossError` (a ``TrainingError``) before
the epoch ends, so no callback writes the non-finite state: the last checkpoint and the history stay those of
the last good epoch.
"""

from __future__ import annotations

import math
from typing import Any

from trainwell.errors import TrainingError
from trainwell.train.callbacks import Callback
from trainwell.train.progress import REFRESH_EVERY_STEPS

# Steps between two reads of the running loss on an accelerator: the progress bar's refresh interval, so that
# both read together. On the CPU the loss is read after every step (see the module docstring).
CHECK_EVERY = REFRESH_EVERY_STEPS


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or inf; the message says where and what to do."""


def nonfinite_loss_error(
    value: float, epoch: int, first_step: int, last_step: int, steps_per_epoch: int, config: str = "CONFIG"
) -> NonFiniteLossError:
    """The error for a loss that became ``value`` in ``epoch`` (1-based) at one of its steps
    ``first_step..last_step`` (1-based) of ``steps_per_epoch``: where, the likely causes, and the diagnostics
    command to run on ``config`` (the config file's path, when known)."""
    where = (
        f"at step {last_step}" if first_step == last_step else f"at one of its steps {first_step}-{last_step}"
    )
    finite = f" (it was finite up to step {first_step - 1})" if first_step > 1 else ""
    return NonFiniteLossError(
        f"the training loss became {value} in epoch {epoch}, {where} of {steps_per_epoch}{finite}. "
        "Likely causes: a learning rate too high (train.optimizer.learning_rate), unscaled inputs "
        "(data.scaling), no gradient clipping (train.optimizer.clipnorm). "
        f"Run `trainwell diagnose {config}` to see the gradients layer by layer."
    )


def running_loss(trainer: Any) -> float:
    """The epoch's running loss sum so far, read back from the device (a host synchronisation)."""
    return 0.0 if trainer.epoch_loss_sum is None else float(trainer.epoch_loss_sum.item())


class TerminateOnNaN(Callback):
    """Raise :class:`NonFiniteLossError` when the running loss is NaN or inf, reading it every ``check_every``
    steps and after each epoch's last step (see the module docstring).

    ``check_every=None`` (the default) means every step when the model is on the CPU and ``CHECK_EVERY``
    steps on an accelerator. ``config`` is the config file's path, for the diagnostics command in the message.
    """

    def __init__(self, check_every: int | None = None, config: str = "CONFIG"):
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.requested = check_every
        self.check_every = check_every or CHECK_EVERY
        self.config = config
        self.finite_up_to = 0  # steps of the current epoch whose losses are known to be finite

    def on_train_begin(self, trainer: Any) -> None:
        if self.requested is None:
            on_cpu = next(trainer.model.parameters()).device.type == "cpu"
            self.check_every = 1 if on_cpu else CHECK_EVERY

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        # An epoch resumed in its middle: checkpoints are written only while the running loss is finite.
        self.finite_up_to = trainer.epoch_step

    def on_step_end(self, trainer: Any, step: int) -> None:
        if step % self.check_every == 0 or trainer.epoch_step == trainer.steps_per_epoch:
            self.check(trainer)

    def check(self, trainer: Any) -> None:
        """Read the running loss now; raise if it is not finite."""
        value = running_loss(trainer)
        if math.isfinite(value):
            self.finite_up_to = trainer.epoch_step
            return
        raise nonfinite_loss_error(
            value,
            trainer.epoch + 1,
            self.finite_up_to + 1,
            trainer.epoch_step,
            trainer.steps_per_epoch,
            self.config,
        )
