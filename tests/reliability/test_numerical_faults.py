"""Numerical faults: a NaN or inf loss stops the run (as Keras's TerminateOnNaN) with a message naming the
epoch and the step (on the CPU; on an accelerator the range of ``CHECK_EVERY`` steps it lies in), the likely
causes and the diagnostics command; the history and the last good checkpoint are kept, nothing non-finite is
saved, and the exit code is non-zero.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal

import numpy as np
import pytest
import torch

from tests.reliability.conftest import BATCH_SIZE, blobs_npz, config_dict, history_rows, run_cli, write_config
from trainwell.config import load_config
from trainwell.errors import TrainingError
from trainwell.runs import run_training
from trainwell.train.callbacks import Callback
from trainwell.train.terminate_on_nan import CHECK_EVERY

FLOAT32_NEAR_MAX = 3e38  # finite, so the .npz passes the loader's NaN/inf check, but x·w overflows to inf


def step_range(message: str) -> tuple[int, int]:
    found = re.search(r"at one of its steps (\d+)-(\d+) of \d+", message) or re.search(
        r"at step (\d+)()", message
    )
    assert found, message
    first = int(found.group(1))
    return first, int(found.group(2) or first)


def test_overflowing_input_stops_the_cli_naming_epoch_steps_and_causes(tmp_path):
    npz = blobs_npz(tmp_path / "data" / "blobs.npz")
    with np.load(npz) as z:
        arrays = dict(z)
    bad_row = 123
    arrays["x_train"][bad_row] = FLOAT32_NEAR_MAX  # an unscaled input of extreme magnitude
    np.savez(npz, **arrays)
    data = config_dict(npz)
    data["data"]["validation_size"] = 0
    del data["train"]["early_stopping"]
    config = write_config(tmp_path / "overflow.toml", data)

    # Where that row comes in epoch 1, re-derived from the documented orders: the data split shuffles the
    # training set with numpy's default_rng(data.seed); each epoch permutes it with torch's randperm from a
    # generator seeded with train.seed.
    n = len(arrays["y_train"])
    split = np.random.default_rng(42).permutation(n)
    position = int(np.flatnonzero(split == bad_row)[0])
    epoch_order = torch.randperm(n, generator=torch.Generator().manual_seed(7)).numpy()
    bad_step = int(np.flatnonzero(epoch_order == position)[0]) // BATCH_SIZE + 1

    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(config), "--out", str(run), "--quiet"])
    assert code == 1 and "Traceback" not in err
    assert (
        "the training loss became nan in epoch 1" in err or "the training loss became inf in epoch 1" in err
    )
    assert step_range(err) == (bad_step, bad_step)  # on the CPU the loss is read after every step
    assert "learning rate" in err and "data.scaling" in err and "clipnorm" in err
    assert f"trainwell diagnose {run / 'config.toml'}" in err
    assert "no epoch finished, so there is no checkpoint" in err
    assert not (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "epoch 1" in info["error"]


class InjectNaN(Callback):
    """Sets one weight to NaN just before optimizer step ``at`` (a blown-up update), optionally sends this
    process SIGINT after that step, and remembers the last step that ran."""

    def __init__(self, model_weight: str, at: int, sigint: bool = False):
        self.weight, self.at, self.sigint, self.last = model_weight, at, sigint, 0

    def on_step_begin(self, trainer, step):
        if step + 1 == self.at:  # ``step`` counts the steps done before this one
            with torch.no_grad():
                trainer.model.get_parameter(self.weight)[0, 0] = math.nan

    def on_step_end(self, trainer, step):
        self.last = step
        if self.sigint and step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def check_kept_epoch_1(run) -> None:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["epoch_step"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert len(history_rows(run)) == 1 and all(math.isfinite(float(v)) for v in history_rows(run)[0].values())
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "epoch 2" in info["error"]


def test_nan_in_epoch_2_stops_within_the_check_interval_and_keeps_epoch_1(tmp_path, npz):
    config = load_config(write_config(tmp_path / "c.toml", config_dict(npz)))
    at = 300 + 123  # step 123 of epoch 2 (300 steps per epoch)
    inject = InjectNaN("dense_1.linear.weight", at)
    with pytest.raises(TrainingError) as info:
        run_training(config, out=tmp_path / "run", progress=False, extra_callbacks=[inject])
    message = str(info.value)
    assert (
        "the training loss became nan in epoch 2, at step 123 of 300 (it was finite up to step 122)"
        in message
    )
    assert inject.last == at  # stopped right after the bad step
    assert "keeps the history and the checkpoint of the last good epoch" in message
    check_kept_epoch_1(tmp_path / "run")


def test_on_an_accelerator_the_check_every_50_steps_names_the_range(npz):
    """The accelerator's cadence (a read every CHECK_EVERY steps, no sync in between), run on the CPU."""
    from tests.conftest import blobs
    from trainwell.nn.build import build_model
    from trainwell.train.loop import fit
    from trainwell.train.terminate_on_nan import TerminateOnNaN

    data = blobs(n=1000)  # 600 training examples: 19 steps per epoch at batch 32
    torch.manual_seed(0)
    model = build_model(config_dict(npz)["model"], (4, 4, 3))
    spec = {"optimizer": {"name": "nadam"}, "epochs": 9, "batch_size": 32, "device": "cpu", "threads": 1}
    at = 5 * 19 + 7  # step 7 of epoch 6: the checks come at steps 50, 100, 150 and at each epoch's end
    inject = InjectNaN("dense_1.linear.weight", at)
    with pytest.raises(TrainingError) as info:
        fit(model, data, spec, callbacks=[inject, TerminateOnNaN(check_every=CHECK_EVERY)])
    assert "in epoch 6, at one of its steps 6-19 of 19 (it was finite up to step 5)" in str(info.value)
    assert inject.last == 6 * 19  # the epoch's last step: its check came first (steps 100 = epoch 6 step 5)


def test_a_signal_after_a_nan_does_not_save_the_nan_state(tmp_path, npz):
    """SIGINT arrives after the loss became NaN but before the next check: the clean stop checks the running
    loss before it writes its mid-epoch checkpoint, and reports the NaN instead."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        config = load_config(write_config(tmp_path / "c.toml", config_dict(npz)))
        at = 300 + 17  # between two checks (they come every 50 steps)
        with pytest.raises(TrainingError, match="the training loss became nan in epoch 2"):
            run_training(
                config,
                out=tmp_path / "run",
                progress=False,
                extra_callbacks=[InjectNaN("dense_1.linear.weight", at, sigint=True)],
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    check_kept_epoch_1(tmp_path / "run")
