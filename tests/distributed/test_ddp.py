"""Data-parallel training for real: 2 CPU processes over loopback (gloo), started by torchrun.

What the issue asks of it: the job finishes, every rank ends with the same weights, exactly one run folder is
written, the loss falls, and 2 processes reach the weights of 1 process with the same global batch and data
order (a net without BN); an error in one process ends the whole job with that process's message; a run
stopped that way, or by Ctrl-C, resumes to the uninterrupted result.

Why 2 processes equal 1 within a tolerance: every batch of 4 splits into two halves of 2, and DDP averages
the two halves' mean gradients, which is the mean gradient of the 4. Only float rounding differs (two
partial sums instead of one): 3e-7 on these weights after 225 steps, measured. A rank training on the wrong
examples, a gradient summed instead of averaged, or Nadam's state out of step would move them by 1e-3 or
more. So 1e-5 separates the two with room on both sides. Two runs on 2 processes, one of them stopped and
resumed, must agree bit for bit: the sum of two numbers does not depend on the order they arrive in.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.distributed.conftest import (
    EPOCHS,
    N_TRAIN,
    PROCESS_TIMEOUT_S,
    RANKS,
    STEPS_PER_EPOCH,
    TORCHRUN_ENV,
    TRAINWELL,
    Reference,
    load_weights,
    max_difference,
    run,
)
from trainwell.runs import read_history, run_status

SAME_WEIGHTS_TOL = 1e-5  # see the module docstring


def test_two_processes_write_one_run_and_reach_the_weights_of_one(reference: Reference) -> None:
    assert len(list(reference.runs_root.iterdir())) == 1  # only rank 0 writes
    assert reference.two.stdout.count("run finished") == 1  # and only rank 0 reports
    info = json.loads((reference.two_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["processes"] == 2
    assert "DistributedDataParallel over 2 processes (gloo)" in info["step"]

    history = read_history(reference.two_dir)
    assert len(history) == EPOCHS
    assert history[-1]["loss"] < history[0]["loss"] / 2  # the loss falls

    weights = load_weights(reference.one_dir / "model.pt")
    assert max_difference(load_weights(reference.two_dir / "model.pt"), weights) < SAME_WEIGHTS_TOL
    for two, one in zip(history, read_history(reference.one_dir), strict=True):  # metrics over both ranks
        assert math.isclose(two["loss"], one["loss"], rel_tol=1e-5)
        assert two["accuracy"] == one["accuracy"]
        assert math.isclose(two["val_loss"], one["val_loss"], rel_tol=1e-5)
        assert two["val_accuracy"] == one["val_accuracy"]


def test_every_rank_ends_with_the_same_weights_under_external_torchrun(
    config: Path, tmp_path: Path, reference: Reference
) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = run([*torchrun, *RANKS[1:], str(config), "run", "--dump", "dump"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ranks = [load_weights(tmp_path / "dump" / f"rank{r}.pt") for r in (0, 1)]
    model = load_weights(tmp_path / "run" / "model.pt")
    for rank in ranks:
        assert max_difference(rank["weights"], model) == 0.0  # bit for bit: DDP keeps the copies identical
    # Each rank trained on its own half of every batch: 75 batches of 4, 2 examples each.
    assert [rank["seen_first_epoch"] for rank in ranks] == [STEPS_PER_EPOCH * 2] * 2 == [N_TRAIN // 2] * 2
    assert max_difference(model, load_weights(reference.two_dir / "model.pt")) == 0.0  # = trainwell train


def test_an_error_in_one_process_ends_the_job_with_its_message_and_the_run_resumes(
    config: Path, tmp_path: Path, reference: Reference
) -> None:
    fail_step = STEPS_PER_EPOCH + 4  # in the second epoch, after rank 0 wrote the first epoch's checkpoint
    proc = run(
        [*RANKS, "launch", "2", str(config), "run", "--fail-rank", "1", "--fail-step", str(fail_step)],
        tmp_path,
    )
    assert proc.returncode == 1
    assert (
        f"error: process 1 of 2 failed (exit code 1): injected fault on rank 1 before step {fail_step}"
        in proc.stderr
    )
    run_dir = tmp_path / "run"
    assert run_status(run_dir) in ("failed", "crashed")  # rank 0 recorded the failure, or was stopped first
    assert len(read_history(run_dir)) == 1

    proc = run([*TRAINWELL, "train", "--resume", "run", "--nproc", "2", "--quiet", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)  # one JSON document: rank 0's alone
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs_run"] == EPOCHS
    assert (
        max_difference(load_weights(run_dir / "model.pt"), load_weights(reference.two_dir / "model.pt"))
        == 0.0
    )


def test_ctrl_c_stops_every_process_and_the_run_resumes_to_the_uninterrupted_weights(
    config: Path, tmp_path: Path, reference: Reference
) -> None:
    """Ctrl-C at a terminal sends SIGINT to the launcher, which passes it on to every process: rank 0 stops
    after its current step and saves a checkpoint there (the others follow it), the job exits with 130, and
    ``--resume --nproc 2`` ends with the weights of the run never stopped, bit for bit."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    proc = subprocess.Popen(
        [*TRAINWELL, "train", str(config), "--nproc", "2", "--out", "stopped", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )  # its own process group, as a terminal's foreground job
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not (tmp_path / "stopped" / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # in epoch 2 or at the end of epoch 1: either must resume exactly
    _, stderr = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode == 130, stderr
    assert (
        "the checkpoint is saved in stopped. Continue with: trainwell train --resume stopped --nproc 2"
        in stderr
    )
    assert run_status(tmp_path / "stopped") == "interrupted"

    resumed = run([*TRAINWELL, "train", "--resume", "stopped", "--nproc", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        max_difference(
            load_weights(tmp_path / "stopped" / "model.pt"), load_weights(reference.two_dir / "model.pt")
        )
        == 0.0
    )


def test_configs_that_cannot_split_are_refused_before_any_process_starts(
    config: Path, tmp_path: Path
) -> None:
    proc = run(
        [*TRAINWELL, "train", str(config), "--nproc", "2", "--runs", "runs", "--set", "train.batch_size=33"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "train.batch_size: 33 does not split evenly across 2 processes" in proc.stderr
    assert "use a multiple of 2, e.g. 32 or 34" in proc.stderr
    proc = run(
        [
            *TRAINWELL,
            "train",
            str(config),
            "--nproc",
            "2",
            "--runs",
            "runs",
            "--set",
            "train.sync_batch_norm=true",
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "train.sync_batch_norm: torch's SyncBatchNorm runs only on GPUs" in proc.stderr
    assert not (tmp_path / "runs").exists()
