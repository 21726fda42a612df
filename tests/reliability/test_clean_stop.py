"""Clean stop: SIGINT or SIGTERM finishes the current step, writes a checkpoint where training stopped (in the
middle of an epoch), prints how to resume and exits 130 / 143; the resumed run equals an uninterrupted one.

The signals are real, sent to a real ``trainwell train`` process frozen (SIGSTOP) among the steps of an epoch,
so that the stop is known to land mid-epoch; SIGCONT lets it handle them.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from tests.reliability.conftest import (
    assert_same_weights,
    checkpoint_epoch,
    comparable,
    finish,
    freeze_mid_epoch,
    history_rows,
    leftovers,
    model_state,
    start,
)
from trainwell.cli import main
from trainwell.runs import run_status


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_mid_epoch_and_resumes_exactly(tmp_path, config, signum, code):
    reference = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(reference), "--quiet"]) == 0

    run = tmp_path / "run"
    proc = start(["train", str(config), "--out", str(run), "--quiet"], cwd=tmp_path)
    epoch = freeze_mid_epoch(proc, run)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    returncode, _, err = finish(proc)

    assert returncode == code, err
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(signum).name} in epoch {epoch + 1} after step" in err
    assert f"trainwell train --resume {run}" in err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == epoch and 0 < ckpt["epoch_step"] < 300  # saved where it stopped, mid-epoch
    assert not ckpt["stop_training"]  # an interruption, not the end of training
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epoch_step"] == ckpt["epoch_step"]
    assert run_status(run) == "interrupted" and not leftovers(run) and not (run / "model.pt").exists()

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert comparable(history_rows(run)) == comparable(history_rows(reference))
    assert_same_weights(model_state(run), model_state(reference))


def test_a_second_signal_stops_at_once_and_the_run_resumes_from_its_last_checkpoint(tmp_path, config):
    """Two signals before the step ends: the first asks for a clean stop, the second is handled as if
    trainwell had not caught the first (SIGTERM's default: the process ends at once), like a crash."""
    run = tmp_path / "run"
    proc = start(["train", str(config), "--out", str(run), "--quiet"], cwd=tmp_path)
    epoch = freeze_mid_epoch(proc, run)
    # Both are pending when the process resumes; Python runs the handlers in signal-number order: INT, TERM.
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    returncode, _, err = finish(proc)

    assert returncode == -signal.SIGTERM, err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == epoch == checkpoint_epoch(run) and ckpt["epoch_step"] == 0  # the last epoch's end
    assert run_status(run) == "crashed"
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    reference = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(reference), "--quiet"]) == 0
    assert comparable(history_rows(run)) == comparable(history_rows(reference))
    assert_same_weights(model_state(run), model_state(reference))


def test_a_signal_ignored_by_whoever_started_trainwell_stays_ignored(tmp_path, config):
    """A background job of a non-interactive shell starts with SIGINT ignored; trainwell keeps it so."""
    run = tmp_path / "run"
    proc = start(["train", str(config), "--out", str(run), "--quiet"], sigint=signal.SIG_IGN, cwd=tmp_path)
    freeze_mid_epoch(proc, run)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    returncode, _, err = finish(proc)
    assert returncode == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.fixture
def python_sigint():
    """SIGINT as Python sets it up by default (KeyboardInterrupt), whatever this test process inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_in_process_stops_fit_after_the_current_step(tmp_path, config, python_sigint):
    """The Python API: run_training in this process, a real SIGINT raised from a step callback."""
    from trainwell.config import load_config
    from trainwell.runs import run_training
    from trainwell.train.callbacks import Callback

    class SignalAt(Callback):
        def __init__(self, at: int):
            self.at, self.last = at, 0

        def on_step_end(self, trainer, step):
            self.last = step
            if step == self.at:
                os.kill(os.getpid(), signal.SIGINT)

    at = 300 + 17  # step 17 of epoch 2
    probe = SignalAt(at)
    result = run_training(load_config(config), out=tmp_path / "run", progress=False, extra_callbacks=[probe])
    assert result.interrupted and result.signal == signal.SIGINT
    assert probe.last == at  # the step in progress finished, and no other began
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 17, at)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
