"""The cifar10-exercise preset end to end on a slice of the real CIFAR-10: the SELU + alpha-dropout variant
trains (its learning rate found by the LR finder), gets its MC-dropout step and a report."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w

from tests.conftest import real_data_dir
from trainwell.experiments.runner import run_experiment
from trainwell.experiments.spec import presets_dir

pytestmark = pytest.mark.integration


def test_the_exercise_preset_runs_a_variant_on_real_data(tmp_path):
    data = real_data_dir()
    if data is None or not (data / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real CIFAR-10 not found: set TRAINWELL_DATA to the folder holding cifar10-jpeg.tar.gz")
    preset = tomllib.loads((presets_dir() / "cifar10-exercise.toml").read_text())
    preset["quick"] = {"data": {"limit_train": 2000, "limit_test": 1000}, "train": {"epochs": 2}}
    for v in preset["variants"]:
        if v["name"] == "alpha-dropout":
            v["mc_dropout"] = 10
    path = tmp_path / "exercise.toml"
    path.write_text(tomli_w.dumps(preset))
    result = run_experiment(path, quick=True, only=["alpha-dropout"], out=tmp_path / "exp", progress=False)
    assert [o.action for o in result.outcomes] == ["trained"], result.outcomes[0].error
    run = tmp_path / "exp" / "alpha-dropout"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["val_accuracy"] > 0.15  # chance is 0.10
    assert (run / "lr_finder.json").is_file() and metrics["found_learning_rate"] > 0
    mc = json.loads((run / "mc_dropout.json").read_text())
    assert mc["valid"]["examples"] == 5000 and mc["valid"]["mc_accuracy"] > 0.15
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    variant = next(v for v in results["variants"] if v["name"] == "alpha-dropout")
    assert variant["mc_accuracy"] == mc["valid"]["mc_accuracy"]
    assert variant["learning_rate"] == metrics["found_learning_rate"]
    html = (tmp_path / "exp" / "report.html").read_text()
    assert '<table id="results">' in html and "MC dropout" in html
