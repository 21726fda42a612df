"""A small source run (a dense net with Batch Normalization on the blobs) for the transfer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwell.config import validate_config
from trainwell.runs import run_training

HIDDEN = [
    {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 8, "activation": "elu", "kernel_initializer": "he_normal"},
]


def config_dict(
    npz: Path,
    output: dict,
    *,
    data: dict | None = None,
    model: dict | None = None,
    pretrain: dict | None = None,
    **train,
) -> dict:
    """The blobs net: ``HIDDEN`` then ``output``; ``data``, ``model`` and ``train`` keys laid over it."""
    return {
        **({"pretrain": pretrain} if pretrain else {}),
        "data": {"dataset": "npz", "path": str(npz), "validation_size": 50, **(data or {})},
        "model": {"layers": [*HIDDEN, output], **(model or {})},
        "train": {
            "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
            "batch_size": 32,
            "device": "cpu",
            "threads": 1,
            "compile": False,
            **({} if "phases" in train else {"epochs": 2}),
            **train,
        },
    }


SOFTMAX3 = {"type": "dense", "units": 3, "activation": "softmax"}
SIGMOID = {"type": "dense", "units": 1, "activation": "sigmoid"}
BINARY = {"classes": [1, 2], "positive_class": 2}  # the blobs' classes 1 and 2, as a binary task


@pytest.fixture
def source_run(tmp_path: Path, blob_npz: Path) -> Path:
    """A finished 3-class run to transfer from."""
    out = tmp_path / "source"
    run_training(validate_config(config_dict(blob_npz, SOFTMAX3)), out=out, progress=False)
    return out
