"""The command line end to end on a small .npz dataset: run folders, JSON output, errors and exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import torch

from tests.conftest import small_config
from trainwell.cli import main


def write_config(path: Path, data: dict) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def npz_config(tmp_path: Path, blob_npz: Path) -> Path:
    data = small_config({"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"},
                        early_stopping={"patience": 1, "restore_best_weights": True}, epochs=3)
    return write_config(tmp_path / "blobs.toml", data)


def test_train_writes_a_complete_run_folder(tmp_path, npz_config, capsys):
    out = tmp_path / "run"
    assert main(["train", str(npz_config), "--out", str(out), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is only the JSON document
    for name in ("config.toml", "run.json", "history.csv", "checkpoint.pt", "model.pt", "metrics.json"):
        assert (out / name).is_file(), name
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"best_epoch", "epochs_run", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                            "train_seconds", "seconds_per_epoch", "samples_per_second"}
    assert metrics["epochs_run"] == len(rows)
    assert printed["test_accuracy"] == metrics["test_accuracy"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert "dense_1.linear.weight" in state
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_evaluate_reproduces_the_runs_test_accuracy(tmp_path, npz_config, capsys):
    out = tmp_path / "run"
    main(["train", str(npz_config), "--out", str(out), "--quiet"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert result["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)


def test_set_overrides_reach_the_run(tmp_path, npz_config):
    out = tmp_path / "run"
    main(["train", str(npz_config), "--out", str(out), "--quiet", "--set", "train.epochs=1",
          "--set", "data.limit_train=50"])
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    assert "limit_train = 50" in (out / "config.toml").read_text()


def test_bad_config_exits_2_and_creates_nothing(tmp_path, npz_config, capsys):
    runs = tmp_path / "runs"
    code = main(["train", str(npz_config), "--runs", str(runs), "--set", "model.layers.1.activation=eluu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.layers[1].activation" in err and "did you mean 'elu'" in err
    assert not runs.exists()


def test_model_that_does_not_fit_the_data_is_refused_before_any_folder(tmp_path, npz_config, capsys):
    runs = tmp_path / "runs"
    assert main(["train", str(npz_config), "--runs", str(runs), "--set", "model.layers.2.units=5"]) == 2
    assert "3 classes" in capsys.readouterr().err and not runs.exists()


def test_existing_run_folder_is_not_overwritten(tmp_path, npz_config, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["train", str(npz_config), "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def test_summary_json(tmp_path, npz_config, capsys):
    assert main(["summary", str(npz_config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 4 * 4 * 3 * 16 + 16 + 16 * 3 + 3


def test_python_dash_m_works(npz_config):
    result = subprocess.run([sys.executable, "-m", "trainwell", "summary", str(npz_config), "--json"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] > 0


def test_an_l1_run_reports_its_sparsity(tmp_path, npz_config):
    import tomllib

    data = tomllib.loads(npz_config.read_text())
    data["model"]["layers"][1]["kernel_regularizer"] = {"l1": 0.5}  # strong enough to zero many weights
    config = write_config(tmp_path / "l1.toml", data)
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = torch.load(out / "model.pt", weights_only=True)
    kernels = [v for k, v in model.items() if k.endswith("linear.weight")]
    expected = sum(int((w.abs() <= 1e-3).sum()) for w in kernels) / sum(w.numel() for w in kernels)
    assert metrics["sparsity_threshold"] == 1e-3
    assert metrics["sparsity"] == pytest.approx(expected) and metrics["sparsity"] > 0


def test_presets_counts_each_preset_s_variants_or_analyses_in_words(capsys):
    import re

    assert main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    # counted from the preset files themselves: [[variants]] and [[analyses]] tables
    from importlib.resources import files

    for name in ("cifar10-exercise", "chapter-questions", "low-latency"):
        text = (files("trainwell.experiments") / "presets" / f"{name}.toml").read_text()
        variants, analyses = text.count("[[variants]]"), text.count("[[analyses]]")
        n, one, many = (variants, "variant", "variants") if variants else (analyses, "analysis", "analyses")
        assert re.search(rf"\b{n} {one if n == 1 else many}\b", lines[name]), lines[name]
