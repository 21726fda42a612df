"""Fixtures for the distributed tests: a small ``.npz``, a config for a net without BN or dropout, real processes.

Each job really runs on 2 CPU processes over loopback (gloo), started by torchrun with a standalone rendezvous
(the OS picks a free port, so parallel test runs cannot collide). The data is small (300 training examples,
75 steps per epoch at batch 4: long enough to be stopped in its middle) so a job takes a few seconds, most of
it starting Python three times. The uninterrupted two-process run and the one-process run that the tests
compare against are made once per module (:func:`reference`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch

TRAINWELL = [sys.executable, "-m", "trainwell"]
RANKS = [sys.executable, str(Path(__file__).with_name("ranks.py"))]  # trainwell train with test hooks
N_TRAIN, N_VALID, N_TEST = 300, 100, 100
BATCH_SIZE, EPOCHS = 4, 3
STEPS_PER_EPOCH = N_TRAIN // BATCH_SIZE  # 75 full batches of 4: 2 examples per process
SHAPE, CLASSES = (4, 4, 3), 3
# Generous: two cores shared with other test runs; a job that hangs fails its test instead of hanging the suite.
PROCESS_TIMEOUT_S = 240


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINWELL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "cache"))
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)  # a test run under torchrun must not make these tests join it


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    """``fit`` applies ``train.threads`` to the whole process; put the test process's setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def blobs_npz(path: Path, seed: int = 0) -> Path:
    """Gaussian blobs, one per class, in the layout ``dataset = "npz"`` reads."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLASSES, *SHAPE)).astype(np.float32)
    n = N_TRAIN + N_VALID + N_TEST
    y = rng.integers(0, CLASSES, size=n)
    x = (centers[y] + rng.normal(size=(n, *SHAPE))).astype(np.float32)
    cut = N_TRAIN + N_VALID
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])
    return path


def config_dict(npz: Path, **train: Any) -> dict[str, Any]:
    """A small dense net without BN or dropout (so one process and two compute the same function), one thread
    per process, Nadam (its state must stay in step on every rank)."""
    return {
        "data": {"dataset": "npz", "path": str(npz), "validation_size": N_VALID, "scaling": "none"},
        "model": {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
                {"type": "dense", "units": CLASSES, "activation": "softmax"},
            ]
        },
        "train": {
            "optimizer": {"name": "nadam", "learning_rate": 1e-2},
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "device": "cpu",
            "threads": 1,
            "seed": 3,
            **train,
        },
    }


def write_config(folder: Path) -> Path:
    path = folder / "blobs.toml"
    path.write_text(tomli_w.dumps(config_dict(blobs_npz(folder / "data" / "blobs.npz"))))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` to its end (or fail the test after PROCESS_TIMEOUT_S), its output captured."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["TRAINWELL_CACHE"] = str(cwd / "cache")
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, env=env
    )


TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Reference:
    """The runs the tests compare against: the config, trained by ``trainwell train --nproc 2`` (its CLI
    process, run folders root and run folder) and by one process alone (its run folder)."""

    config: Path
    two: subprocess.CompletedProcess
    runs_root: Path
    two_dir: Path
    one_dir: Path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder)
    two = run([*TRAINWELL, "train", str(config), "--nproc", "2", "--runs", "runs", "--quiet"], folder)
    assert two.returncode == 0, two.stderr
    folders = list((folder / "runs").iterdir())
    one = run([*TRAINWELL, "train", str(config), "--out", "one", "--quiet"], folder)
    assert one.returncode == 0, one.stderr
    return Reference(config, two, folder / "runs", folders[0], folder / "one")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)
