"""Shared fixtures: small synthetic datasets that need no download, and the real data when present."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class ArrayDataset:
    """Just what ``fit`` reads: in-memory arrays in Keras layout."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def blobs(n: int = 600, shape: tuple[int, ...] = (4, 4, 3), classes: int = 3, seed: int = 0,
          noise: float = 0.5) -> ArrayDataset:
    """Gaussian blobs, one per class: learnable in a few epochs by a small dense net."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, *shape)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + noise * rng.normal(size=(n, *shape))).astype(np.float32)
    a, b = int(n * 0.6), int(n * 0.8)
    return ArrayDataset(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


@pytest.fixture
def blob_data() -> ArrayDataset:
    return blobs()


@pytest.fixture
def blob_npz(tmp_path: Path) -> Path:
    """The blobs as an ``.npz`` file in the layout ``dataset = "npz"`` reads."""
    d = blobs(n=500, classes=3)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=np.concatenate([d.x_train, d.x_valid]), y_train=np.concatenate([d.y_train, d.y_valid]),
             x_test=d.x_test, y_test=d.y_test)
    return path


def real_data_dir() -> Path | None:
    value = os.environ.get("TRAINWELL_DATA")
    return Path(value) if value and Path(value).is_dir() else None


def small_config(dataset: dict, **train: object) -> dict:
    """A config dict for a small dense net on ``dataset`` (a ``[data]`` table)."""
    return {
        "data": dataset,
        "model": {"layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]},
        "train": {"optimizer": {"name": "nadam", "learning_rate": 1e-2}, "epochs": 2, "batch_size": 32,
                  "device": "cpu", **train},
    }
