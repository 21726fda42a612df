"""Exact resume: a run killed with SIGKILL in the middle of an epoch, then resumed, ends with the weights (to
1e-6) and the history (bit for bit) of an uninterrupted run with the same seed.

The fault is real: ``trainwell train`` runs in its own process and gets SIGKILL, which it cannot catch, among
the steps of an epoch after it has written at least one checkpoint. ``trainwell train --resume`` then goes on
from the last checkpoint (the end of the last finished epoch) and must redo the lost steps exactly: the same
data order, the same dropout masks, the same optimizer state.
"""

from __future__ import annotations

import json
import signal

from tests.reliability.conftest import (
    assert_same_weights,
    checkpoint_epoch,
    comparable,
    config_dict,
    finish,
    freeze_mid_epoch,
    history_rows,
    leftovers,
    model_state,
    start,
    write_config,
)
from trainwell.cli import main
from trainwell.runs import run_status


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, config, capsys):
    reference = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(reference), "--quiet"]) == 0

    run = tmp_path / "run"
    proc = start(["train", str(config), "--out", str(run), "--quiet"], cwd=tmp_path)
    epoch = freeze_mid_epoch(proc, run)
    # While the process lives, its folder is locked: a second trainer is refused, not let in to race it.
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert f"pid {proc.pid}" in capsys.readouterr().err
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL

    assert json.loads((run / "run.json").read_text())["status"] == "running"  # it had no chance to say more
    assert run_status(run) == "crashed"  # ... but the kernel released its lock
    assert checkpoint_epoch(run) == epoch and not (run / "metrics.json").exists()

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert comparable(history_rows(run)) == comparable(history_rows(reference))
    assert_same_weights(model_state(run), model_state(reference))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch
    assert metrics["test_accuracy"] == json.loads((reference / "metrics.json").read_text())["test_accuracy"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished" and not leftovers(run)

    # A finished run is not trained again.
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "already finished" in capsys.readouterr().err


def test_resume_after_early_stopping_ended_training_does_not_train_on(tmp_path, npz):
    """A crash between the checkpoint of the epoch where early stopping ended training and the end of the run
    (final model, metrics): the resumed run finishes with those weights and trains no further epoch."""
    data = config_dict(
        npz,
        epochs=10,
        early_stopping={"monitor": "loss", "patience": 0, "min_delta": 10.0, "restore_best_weights": True},
    )
    config = write_config(
        tmp_path / "stops.toml", data
    )  # min_delta 10: no epoch improves, stops after epoch 2
    reference = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(reference), "--quiet"]) == 0
    assert len(history_rows(reference)) == 2

    # The state a crash right after that checkpoint leaves: everything but model.pt and metrics.json.
    crashed = tmp_path / "crashed"
    assert main(["train", str(config), "--out", str(crashed), "--quiet"]) == 0
    (crashed / "metrics.json").unlink()
    (crashed / "model.pt").unlink()
    info = json.loads((crashed / "run.json").read_text())
    (crashed / "run.json").write_text(json.dumps(info | {"status": "running"}))
    assert run_status(crashed) == "crashed"

    assert main(["train", "--resume", str(crashed), "--quiet"]) == 0
    assert len(history_rows(crashed)) == 2
    assert_same_weights(model_state(crashed), model_state(reference), atol=0)
