"""Fixtures for the reliability suite: an isolated environment, a small dataset, a config, a real CLI process.

Every test runs with ``TRAINWELL_DATA`` and ``TRAINWELL_CACHE`` inside its own ``tmp_path``, so nothing it
does (or fails to do) touches the user's data or cache, and "nothing was created" can be checked by listing
folders. The dataset is a small ``.npz`` of Gaussian blobs, big enough that an epoch lasts long enough to be
interrupted in its middle (300 steps), small enough that the whole suite runs in a few minutes on two cores.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch

TRAINWELL = [sys.executable, "-m", "trainwell"]  # the installed CLI, run as `python -m trainwell`
EPOCHS = 3
BATCH_SIZE = 8
N_TRAIN, N_VALID, N_TEST = 2400, 200, 200  # 300 steps per epoch at batch 8
SHAPE = (6, 6, 3)
CLASSES = 3
PROCESS_TIMEOUT_S = 120  # generous: the CPU is shared; a hung process fails the test instead of hanging it


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("TRAINWELL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    """``fit`` applies ``train.threads`` to the whole process; put the test process's setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def blobs_npz(path: Path, n_train: int = N_TRAIN + N_VALID, n_test: int = N_TEST, seed: int = 0) -> Path:
    """Gaussian blobs, one per class, as an ``.npz`` in the layout ``dataset = "npz"`` reads."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLASSES, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n_train + n_test)
    x = (centers[y] + 1.5 * rng.normal(size=(len(y), *SHAPE))).astype(np.float32)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


def config_dict(npz: Path, **train: Any) -> dict[str, Any]:
    """A small dense net with dropout (so the dropout RNG must survive a resume too), one thread (so a run in
    a subprocess and one in this process compute the same bits), early stopping on a validation split."""
    return {
        "data": {"dataset": "npz", "path": str(npz), "validation_size": N_VALID, "scaling": "none"},
        "model": {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": CLASSES, "activation": "softmax"},
            ]
        },
        "train": {
            "optimizer": {"name": "nadam", "learning_rate": 1e-3},
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "device": "cpu",
            "threads": 1,
            "seed": 7,
            "early_stopping": {"patience": 5, "restore_best_weights": True},
            **train,
        },
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return blobs_npz(tmp_path / "data" / "blobs.npz")


@pytest.fixture
def config(tmp_path: Path, npz: Path) -> Path:
    return write_config(tmp_path / "blobs.toml", config_dict(npz))


def start(
    args: list[str], sigint: Any = signal.default_int_handler, command: list[str] = TRAINWELL, **kwargs: Any
) -> subprocess.Popen:
    """``trainwell ARGS`` in a new process, its output captured.

    SIGINT is given a Python handler here for the moment of the fork: the child then starts with SIGINT at
    its default, as from a terminal, even when this test process was started with SIGINT ignored (as a
    background job of a non-interactive shell is), which the child would otherwise inherit and keep. With
    ``sigint=signal.SIG_IGN`` the child starts with SIGINT ignored instead.
    """
    previous = signal.signal(signal.SIGINT, sigint)
    try:
        return subprocess.Popen(
            [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for ``proc``; its exit code, stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process did not end in {PROCESS_TIMEOUT_S} s; stderr:\n{err}")
    return proc.returncode, out, err


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen, what: str, poll_s: float = 0.005) -> Any:
    """Poll ``condition`` until it returns something truthy; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}; stderr:\n{err}")
        time.sleep(poll_s)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def checkpoint_epoch(run_dir: Path) -> int | None:
    """The number of finished epochs in the run's checkpoint, or None while there is none."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    return int(torch.load(path, weights_only=True)["epoch"])


def history_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """History rows without the wall-clock column: everything else must match bit for bit (as text, since
    ``csv`` writes each float with ``repr``, which round-trips exactly)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes (``.NAME.*.tmp``) anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``trainwell ARGS`` in a new process, to the end."""
    return finish(start(args))


def freeze_mid_epoch(proc: subprocess.Popen, run_dir: Path) -> int:
    """Stop ``proc`` (SIGSTOP) in the middle of an epoch after its first checkpoint; return the checkpoint's
    epoch count ``k``: the process is frozen among the steps of epoch ``k + 1``.

    After epoch ``k``'s checkpoint appears, wait a third of that epoch's duration (so the next epoch's steps
    are under way), freeze, and check that the run folder still holds epoch ``k``'s history and checkpoint and
    no write in progress; if the process got further (a loaded machine), let it go and try the next epoch.
    """
    for k in range(1, EPOCHS):
        wait_for(lambda k=k: (checkpoint_epoch(run_dir) or 0) >= k, proc, f"the checkpoint of epoch {k}")
        seconds = float(history_rows(run_dir)[k - 1]["seconds"])
        time.sleep(seconds / 3)
        proc.send_signal(signal.SIGSTOP)
        if checkpoint_epoch(run_dir) == k and len(history_rows(run_dir)) == k and not leftovers(run_dir):
            return k
        proc.send_signal(signal.SIGCONT)
    proc.kill()
    pytest.fail("could not freeze the run in the middle of an epoch")
