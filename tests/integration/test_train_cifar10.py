"""End to end on real data: train the exercise's baseline for 2 epochs on a slice of CIFAR-10."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import real_data_dir
from trainwell.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.integration


@pytest.fixture
def cifar10() -> Path:
    data = real_data_dir()
    if data is None or not (data / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real CIFAR-10 not found: set TRAINWELL_DATA to the folder holding cifar10-jpeg.tar.gz")
    return data


def test_baseline_trains_two_epochs_on_a_slice(cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "cifar10_baseline.toml"), "--out", str(out), "--quiet", "--json",
                 "--set", "train.epochs=2", "--set", "data.limit_train=4000", "--set", "data.limit_test=2000",
                 "--set", "train.optimizer.learning_rate=5e-4"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and metrics["epochs_run"] == 2
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert metrics["val_accuracy"] > 0.15 and metrics["test_accuracy"] > 0.15  # chance is 0.10
    run = json.loads((out / "run.json").read_text())
    assert "cifar10-jpeg.tar.gz" in run["data_source"] and run["input_shape"] == [32, 32, 3]
    assert run["classes"][0] == "airplane" and run["classes"][-1] == "truck"
