"""Clean stop on SIGINT / SIGTERM: finish the current step, save a checkpoint, say how to resume.

:class:`GracefulStop` is a callback and a context manager: inside ``with stopper:`` the first SIGINT (Ctrl-C)
or SIGTERM (``kill``, a scheduler's pre-emption) is only remembered, so the step in progress finishes. Then

- after that step, it asks the loop to stop; the loop leaves the epoch in its middle and reports the run as
  interrupted (:attr:`~trainwell.train.loop.TrainState.interrupted`), and the caller saves a mid-epoch
  checkpoint from which ``trainwell train --resume`` continues exactly;
- a signal that arrives after an epoch's last step (during validation or the epoch-end callbacks) lets that
  epoch end normally, its checkpoint written, and then marks the run interrupted;
- a signal that arrives once training is over (the final model being written) is only remembered: the run
  finishes.

A second signal is handled as if trainwell had not caught the first: the previous handlers are put back and
the signal raised again (Python's SIGINT handler raises ``KeyboardInterrupt``; SIGTERM's default ends the
process at once). That is a hard stop, like a crash: the run resumes from its last checkpoint.

The exit status of a process stopped this way is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM),
the shell's convention for a process ended by that signal. A signal inherited as ignored (a background job of
a non-interactive shell ignores SIGINT) stays ignored. Handlers can only be installed from the main thread;
elsewhere the stopper does nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from trainwell.train.callbacks import Callback

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The exit status of a process stopped by ``signum``: ``128 + signum`` (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def resume_message(signum: int, run_dir: Any, epoch: int, epoch_step: int, steps_per_epoch: int) -> str:
    """What to tell the user after a clean stop: where training stopped and the command that continues it.

    ``epoch`` counts finished epochs and ``epoch_step`` the steps done in the next one (0 at a boundary).
    """
    if epoch_step:
        where = f"in epoch {epoch + 1} after step {epoch_step} of {steps_per_epoch}"
    else:
        where = f"after epoch {epoch}"
    return (
        f"stopped by {signal_name(signum)} {where}; the checkpoint is saved in {run_dir}. "
        f"Continue with: trainwell train --resume {run_dir}"
    )


class GracefulStop(Callback):
    """Turn the first SIGINT/SIGTERM into a clean stop after the current step (see the module docstring).

    Put it after every callback whose epoch-end work must finish (the run recorder), and use it as a context
    manager around training so that its handlers are installed and then put back.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue  # ignored by whoever started us (e.g. a background job): keep it that way
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum  # acted on after the current step, see on_step_end / on_epoch_end
            return
        # A second signal: a hard stop, as if we had never caught the first.
        self._restore()
        signal.raise_signal(signum)

    def on_step_end(self, trainer: Any, step: int) -> None:
        # After an epoch's last step the epoch is left to end normally (on_epoch_end marks the stop): asking
        # the loop to stop there would look like an early stop that ended training, not an interruption.
        if self.received is not None and trainer.epoch_step < trainer.steps_per_epoch:
            trainer.stop_training = True

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.received is not None:
            trainer.interrupted = True
