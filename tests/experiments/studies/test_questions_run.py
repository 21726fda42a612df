"""The question studies end to end on the blobs: every kind trains its sub-runs, measures, writes study.json
and its report section; a second run skips them (same fingerprint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import small_config
from tests.experiments.conftest import write_experiment
from trainwell.experiments import run_experiment
from trainwell.experiments.studies.base import STUDY_JSON

ANALYSES = [
    {"name": "q1", "kind": "symmetric_init"},
    {"name": "q2", "kind": "zero_bias", "params": {"seeds": [1, 2]}},
    {"name": "q3", "kind": "selu_vs_relu", "params": {"depth": 3, "units": 8}},
    {
        "name": "q4",
        "kind": "activation_choice",
        "params": {"depth": 2, "units": 8, "activations": ["selu", "relu", "sigmoid"]},
    },
    {"name": "q5", "kind": "momentum_too_high", "params": {"probe_every": 5}},
    {
        "name": "q7",
        "kind": "dropout_cost",
        "params": {
            "batch_sizes": [4],
            "latency_runs": 2,
            "mc_samples": [1, 3],
            "mc_examples": 20,
            "timing_repeats": 1,
        },
    },
]


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    from tests.conftest import blobs

    root = tmp_path_factory.mktemp("questions")
    d = blobs(n=500, classes=3)
    npz = root / "blobs.npz"
    np.savez(
        npz,
        x_train=np.concatenate([d.x_train, d.x_valid]),
        y_train=np.concatenate([d.y_train, d.y_valid]),
        x_test=d.x_test,
        y_test=d.y_test,
    )
    base = small_config(
        {"dataset": "npz", "path": str(npz), "validation_size": 100, "scaling": "standardize"}, epochs=2
    )
    base["model"]["layers"][1]["activation"] = "relu"
    base["train"].update({"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, "threads": 1})
    path = write_experiment(
        root / "questions.toml", {"name": "questions", "base": base, "analyses": ANALYSES}
    )
    result = run_experiment(path, out=root / "out", progress=False)
    assert not result.failed, [o.error for o in result.failed]
    assert [o.action for o in result.analyses] == ["analysed"] * len(ANALYSES)
    return root / "out"


def test_every_study_writes_its_records_and_answers_in_the_report(answered: Path):
    for analysis in ANALYSES:
        stored = json.loads((answered / analysis["name"] / STUDY_JSON).read_text())
        assert stored["kind"] == analysis["kind"]
    report = (answered / "report.md").read_text()
    assert "## Answers at a glance" in report
    assert f"{len(ANALYSES)} analyses · " in report and "0 variants" not in report  # the header counts what ran
    for title in (
        "One value for every weight",
        "Biases initialized to 0",
        "SELU over ReLU",
        "Which activation",
        "Momentum too close to 1",
        "What dropout costs",
    ):
        assert title in report
    assert "Not measured yet" not in report
    assert "*The chapter's answer:*" in report


def test_constant_init_units_stay_identical_through_training(answered: Path):
    """The chapter's claim, measured by the probes on the blobs: every hidden unit of the constant net still
    shares its incoming weights with the others after training, and no unit of the He net does."""
    runs = json.loads((answered / "q1" / STUDY_JSON).read_text())["records"]["runs"]
    assert [(s["symmetric_units"], s["units"]) for s in runs["constant"]["symmetric"]] == [(16, 16)]
    assert [s["symmetric_units"] for s in runs["he-normal"]["symmetric"]] == [0]
    assert runs["constant"]["symmetric_units_finding"]


def test_selu_stack_has_no_dead_units_and_timing_records_are_complete(answered: Path):
    q3 = json.loads((answered / "q3" / STUDY_JSON).read_text())["records"]["runs"]
    assert [d for d, _ in q3["selu"]["dead_units"]] == [0, 0, 0]
    q7 = json.loads((answered / "q7" / STUDY_JSON).read_text())["records"]
    assert [m["samples"] for m in q7["mc_seconds"]] == [1, 3]
    assert all(m["seconds"] > 0 for m in q7["mc_seconds"])


def test_a_second_run_skips_measured_studies(answered: Path):
    result = run_experiment(answered / "experiment.toml", out=answered, progress=False)
    assert [o.action for o in result.analyses] == ["skipped"] * len(ANALYSES)
