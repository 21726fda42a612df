"""The chapter-questions preset on the real Fashion-MNIST, two of its questions on a small slice: the
constant-initialized net keeps every hidden unit identical, and momentum 0.99999 ends worse than 0.9."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w

from trainwell.errors import DataError
from trainwell.experiments.runner import run_experiment
from trainwell.experiments.spec import presets_dir
from trainwell.experiments.studies.base import STUDY_JSON

pytestmark = pytest.mark.integration


def test_questions_1_and_5_on_fashion_mnist(tmp_path):
    from trainwell.data import dataset_info

    try:
        dataset_info("fashion_mnist")
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not found: {e}")
    preset = tomllib.loads((presets_dir() / "chapter-questions.toml").read_text())
    preset["quick"] = {
        "data": {"limit_train": 3000, "limit_test": 500, "validation_size": 1000},
        "train": {"epochs": 2, "threads": 1},
    }
    path = tmp_path / "questions.toml"
    path.write_text(tomli_w.dumps(preset))
    only = ["q1-symmetric-init", "q5-momentum"]
    result = run_experiment(path, quick=True, only=only, out=tmp_path / "exp", progress=False)
    assert [o.action for o in result.analyses] == ["analysed", "analysed"], [o.error for o in result.analyses]
    q1 = json.loads((tmp_path / "exp" / "q1-symmetric-init" / STUDY_JSON).read_text())["records"]["runs"]
    assert [(s["symmetric_units"], s["units"]) for s in q1["constant"]["symmetric"]] == [
        (100, 100),
        (100, 100),
    ]
    assert q1["he-normal"]["val_accuracy"] > q1["constant"]["val_accuracy"] + 0.3
    q5 = json.loads((tmp_path / "exp" / "q5-momentum" / STUDY_JSON).read_text())["records"]["runs"]
    high, low = q5["momentum-0.99999"], q5["momentum-0.9"]
    assert high["status"] == "diverged" or high["val_accuracy"] < low["val_accuracy"]
    report = (tmp_path / "exp" / "report.md").read_text()
    assert "## Answers at a glance" in report and "the measurement agrees" in report
