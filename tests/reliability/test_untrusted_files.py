"""Untrusted files: checkpoints and models load with ``torch.load(weights_only=True)``, datasets without
unpickling; a file that carries a pickled object is refused before anything in it runs.

The payload is live: unpickled, it creates a marker file (``open(marker, "w")``). Each test first proves that
an unsafe load would run it, then that trainwell refuses the file and the marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reliability.conftest import TRAINWELL, config_dict, finish, write_config
from trainwell.cli import main


class Payload:
    """Unpickling this calls ``open(marker, "w")``, which creates the marker: code run by loading a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def prove_live(path: Path, marker: Path) -> None:
    """Loading ``path`` the unsafe way runs the payload; then the marker is removed again."""
    torch.load(path, weights_only=False)
    assert marker.exists(), "the payload did not run: the test would prove nothing"
    marker.unlink()


@pytest.fixture
def finished_run(tmp_path: Path, npz: Path) -> Path:
    config = write_config(tmp_path / "c.toml", config_dict(npz, epochs=1))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0
    return run


def test_a_pickle_bearing_checkpoint_is_refused_on_resume(tmp_path, finished_run, capsys):
    marker = tmp_path / "pwned"
    run = finished_run
    # Make it an interrupted run whose checkpoint looks right but carries the payload.
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save(ckpt | {"extra": {"note": Payload(marker)}}, run / "checkpoint.pt")
    (run / "metrics.json").unlink()
    (run / "run.json").write_text(json.dumps({"status": "interrupted"}))
    prove_live(run / "checkpoint.pt", marker)

    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint.pt'}: refused to load" in err and "could run code on load" in err
    assert not marker.exists()


def test_a_pickle_bearing_model_is_refused_even_when_the_environment_asks_torch_not_to(
    tmp_path, finished_run
):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns weights-only loading off where a caller leaves it to the
    default; trainwell asks for it explicitly, which torch honours. A real ``trainwell evaluate`` process."""
    marker = tmp_path / "pwned"
    run = finished_run
    torch.save({"dense_1.linear.weight": Payload(marker)}, run / "model.pt")
    prove_live(run / "model.pt", marker)

    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.Popen(
        [*TRAINWELL, "evaluate", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    code, _, err = finish(proc)
    assert code == 1 and "Traceback" not in err
    assert f"{run / 'model.pt'}: refused to load" in err
    assert not marker.exists()


def test_an_npz_with_a_pickled_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "data" / "evil.npz"
    x = np.empty(1, dtype=object)
    x[0] = Payload(marker)
    np.savez(path, x_train=x, y_train=np.zeros(1, np.int64), x_test=x, y_test=np.zeros(1, np.int64))
    with np.load(path, allow_pickle=True) as z:  # the unsafe way runs it
        z["x_train"]
    assert marker.exists()
    marker.unlink()

    config = write_config(tmp_path / "c.toml", config_dict(path))
    assert main(["train", str(config), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read it without unpickling Python objects" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_cifar10_batch_with_a_payload_is_refused(tmp_path, capsys):
    """CIFAR-10's official batches are pickles; trainwell's unpickler rebuilds only arrays and plain data."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir()
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ):
        (folder / name).write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Payload(marker)}))
    pickle.loads((folder / "batches.meta").read_bytes())  # the unsafe way runs it
    assert marker.exists()
    marker.unlink()

    data = config_dict(folder)
    data["data"] = {"dataset": "cifar10", "path": str(folder), "verify": False, "validation_size": 2}
    config = write_config(tmp_path / "c.toml", data)
    assert main(["train", str(config), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "batches.meta is not a readable CIFAR-10 batch" in err and "refusing to load io.open" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_truncated_checkpoint_is_a_clear_error_not_a_traceback(tmp_path, finished_run, capsys):
    run = finished_run
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (run / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 1
    assert (
        f"{run / 'checkpoint.pt'}: not a readable torch file (truncated or corrupt?)"
        in capsys.readouterr().err
    )
