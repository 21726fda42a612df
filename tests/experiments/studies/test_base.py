"""The analyses machinery: ``[[analyses]]`` in experiment files, and running a study (sub-runs skipped or
resumed, study.json fingerprints, failures and divergence recorded) with a toy study on the blobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import small_config
from tests.experiments.conftest import tiny_experiment, write_experiment
from trainwell.errors import ConfigError
from trainwell.experiments.spec import load_experiment, plan_analyses, plan_runs
from trainwell.experiments.studies.base import (
    ANALYSIS_JSON,
    DIVERGED,
    STUDY_JSON,
    Study,
    StudyContext,
    StudyReport,
    SubRun,
    run_analyses,
)
from trainwell.registry import Registry
from trainwell.spec import Spec


class ToyParams(Spec):
    learning_rates: list[float] = [0.01]
    fail: bool = False


def toy_run(ctx: StudyContext) -> dict[str, Any]:
    if ctx.params.fail:
        raise RuntimeError("the toy study fails on purpose")
    runs = [
        SubRun(
            f"lr{i}",
            {**ctx.base, "train": {**ctx.base["train"], "optimizer": {"name": "sgd", "learning_rate": lr}}},
        )
        for i, lr in enumerate(ctx.params.learning_rates)
    ]
    results = ctx.train(runs)
    made = ctx.derived("derived", lambda out: _make(out))
    return {"status": {n: r.status for n, r in results.items()}, "derived": made}


def _make(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"made": True}))
    return {"made": True}


def toy_report(rctx: Any) -> StudyReport:  # not used by these tests
    raise NotImplementedError


TOY = Study("toy", "Toy", "Toy?", "toy", ToyParams, toy_run, toy_report)
TOYS: Registry[Study] = Registry("study", {"toy": TOY})


def experiment_file(
    tmp_path: Path, npz: Path, analyses: list[dict[str, Any]], variants: bool = False
) -> Path:
    data = tiny_experiment(npz)
    data["base"] = small_config(
        {"dataset": "npz", "path": str(npz), "validation_size": 100, "scaling": "none"}, epochs=1
    )
    if not variants:
        del data["variants"]
    data["analyses"] = analyses
    return write_experiment(tmp_path / "exp.toml", data)


def planned(path: Path, **kw: Any):
    return plan_analyses(load_experiment(path), **kw)


# --- the experiment file ------------------------------------------------------------------------------------


def test_an_experiment_needs_a_variant_or_an_analysis(tmp_path, blob_npz):
    with pytest.raises(ConfigError, match=r"at least one \[\[variants\]\] or \[\[analyses\]\]"):
        load_experiment(experiment_file(tmp_path, blob_npz, []))


def test_analysis_names_share_the_folder_namespace_with_variants(tmp_path, blob_npz):
    path = experiment_file(tmp_path, blob_npz, [{"name": "plain", "kind": "sparsity"}], variants=True)
    with pytest.raises(
        ConfigError, match="'plain' is used twice; every variant and analysis needs its own name"
    ):
        load_experiment(path)


def test_only_names_variants_or_analyses(tmp_path, blob_npz):
    path = experiment_file(tmp_path, blob_npz, [{"name": "sparse", "kind": "sparsity"}], variants=True)
    exp = load_experiment(path)
    assert plan_runs(exp, only=["sparse"]) == []
    assert [p.analysis.name for p in plan_analyses(exp, only=["sparse"])] == ["sparse"]
    assert plan_analyses(exp, only=["plain"]) == []
    with pytest.raises(
        ConfigError, match=r"unknown variant or analysis 'sparce' \(did you mean 'sparse'\?\)"
    ):
        plan_runs(exp, only=["sparce"])


def test_quick_params_merge_onto_params_and_set_onto_base(tmp_path, blob_npz):
    analysis = {
        "name": "s",
        "kind": "sparsity",
        "set": {"train": {"epochs": 4}},
        "params": {"sparsities": [0.5, 0.9], "finetune_epochs": 2},
        "quick_params": {"sparsities": [0.9]},
    }
    path = experiment_file(tmp_path, blob_npz, [analysis])
    full, quick = planned(path)[0], planned(path, quick=True)[0]
    assert full.params == {"sparsities": [0.5, 0.9], "finetune_epochs": 2}
    assert quick.params == {"sparsities": [0.9], "finetune_epochs": 2}  # lists replaced, other keys kept
    assert full.config.train.epochs == 4
    assert quick.config.train.epochs == 2  # the file's [quick] (train.epochs = 2) is merged after the set


def test_unset_of_an_analysis_names_the_analysis(tmp_path, blob_npz):
    path = experiment_file(
        tmp_path, blob_npz, [{"name": "s", "kind": "sparsity", "unset": ["train.nothing"]}]
    )
    with pytest.raises(ConfigError, match=r"analyses \(s\)\.unset: 'train.nothing' is not a key"):
        planned(path)


# --- running a study --------------------------------------------------------------------------------------------


def test_run_analyses_trains_skips_and_remeasures(tmp_path, blob_npz):
    path = experiment_file(tmp_path, blob_npz, [{"name": "t", "kind": "sparsity"}])
    plans = planned(path)
    plans[0].analysis = plans[0].analysis.model_copy(update={"kind": "toy"})
    out, record = tmp_path / "out", {}
    (out).mkdir()
    outcomes = run_analyses(plans, out, record, TOYS, progress=False)
    assert [o.action for o in outcomes] == ["analysed"]
    stored = json.loads((out / "t" / STUDY_JSON).read_text())
    assert stored["records"] == {"status": {"lr0": "trained"}, "derived": {"made": True}}
    assert stored["fingerprint"]["params"] == {} and stored["cpus"] >= 1
    assert json.loads((out / "t" / ANALYSIS_JSON).read_text())["runs"]["lr0"]["status"] == "trained"
    assert record["analyses"]["t"]["status"] == "analysed"
    # the same fingerprint: skipped, nothing retrained
    assert [o.action for o in run_analyses(plans, out, record, TOYS, progress=False)] == ["skipped"]
    # other params: measured again; the finished sub-run is skipped, the new one trained, the derived folder
    # (already made) read back
    plans[0].params = {"learning_rates": [0.01, 0.02]}
    run_analyses(plans, out, record, TOYS, progress=False)
    stored = json.loads((out / "t" / STUDY_JSON).read_text())
    assert stored["records"]["status"] == {"lr0": "skipped", "lr1": "trained"}


def test_a_failing_study_is_recorded_and_the_next_one_runs(tmp_path, blob_npz):
    analyses = [{"name": "bad", "kind": "sparsity"}, {"name": "good", "kind": "sparsity"}]
    plans = planned(experiment_file(tmp_path, blob_npz, analyses))
    for p in plans:
        p.analysis = p.analysis.model_copy(update={"kind": "toy"})
    plans[0].params = {"fail": True}
    out, record = tmp_path / "out", {}
    out.mkdir()
    outcomes = run_analyses(plans, out, record, TOYS, progress=False)
    assert [o.action for o in outcomes] == ["failed", "analysed"]
    assert outcomes[0].error == "RuntimeError: the toy study fails on purpose"
    assert "RuntimeError" in record["analyses"]["bad"]["traceback"]
    assert not (out / "bad" / STUDY_JSON).exists()


def test_a_diverging_sub_run_is_a_result_and_is_not_retried(tmp_path, blob_npz):
    plans = planned(experiment_file(tmp_path, blob_npz, [{"name": "t", "kind": "sparsity"}]))
    plans[0].analysis = plans[0].analysis.model_copy(update={"kind": "toy"})
    plans[0].params = {"learning_rates": [1e30]}  # the first step overflows the weights: loss inf/NaN
    out, record = tmp_path / "out", {}
    out.mkdir()
    run_analyses(plans, out, record, TOYS, progress=False)
    stored = json.loads((out / "t" / STUDY_JSON).read_text())
    assert stored["records"]["status"] == {"lr0": DIVERGED}
    plans[0].params = {"learning_rates": [1e30], "fail": False}  # a new fingerprint: the study runs again
    lines: list[str] = []
    run_analyses(plans, out, record, TOYS, progress=False, say=lines.append)
    assert any("diverged before, not retried" in line for line in lines)


def test_a_sub_run_name_must_be_a_folder_name(tmp_path, blob_npz):
    plans = planned(experiment_file(tmp_path, blob_npz, [{"name": "t", "kind": "sparsity"}]))
    ctx = StudyContext(plans[0], ToyParams(), tmp_path)
    with pytest.raises(ValueError, match="the sub-run name 'lr 1' is not a valid folder name"):
        ctx.train([SubRun("lr 1", plans[0].data)])


def test_a_half_made_derived_folder_is_made_again(tmp_path, blob_npz):
    plans = planned(experiment_file(tmp_path, blob_npz, [{"name": "t", "kind": "sparsity"}]))
    ctx = StudyContext(plans[0], ToyParams(), tmp_path)
    (tmp_path / "t" / "derived").mkdir(parents=True)
    (tmp_path / "t" / "derived" / "partial.bin").write_text("left by a crash")
    assert ctx.derived("derived", _make) == {"made": True}
    assert not (tmp_path / "t" / "derived" / "partial.bin").exists()
    assert ctx.derived("derived", lambda out: pytest.fail("made twice")) == {"made": True}


# --- the report's analyses sections --------------------------------------------------------------------------


def test_unmeasured_and_unreportable_studies_get_a_section_that_says_why(tmp_path, blob_npz):
    from trainwell.experiments.report import build_report
    from trainwell.experiments.runner import EXPERIMENT_JSON, EXPERIMENT_TOML

    analyses = [{"name": "broken", "kind": "zero_bias"}, {"name": "later", "kind": "zero_bias"}]
    path = experiment_file(tmp_path, blob_npz, analyses)
    out = tmp_path / "out"
    (out / "broken").mkdir(parents=True)
    (out / EXPERIMENT_TOML).write_text(path.read_text())
    record = {"runs": {}, "analyses": {"later": {"status": "failed", "error": "RuntimeError: boom"}}}
    (out / EXPERIMENT_JSON).write_text(json.dumps(record))
    # records without the runs zero_bias reports on, as an older version might have left them
    stored = {"kind": "zero_bias", "fingerprint": {"params": {}}, "records": {"validation_examples": 100}}
    (out / "broken" / STUDY_JSON).write_text(json.dumps(stored))
    build_report(out)
    report = (out / "report.md").read_text()
    assert "could not be reported (KeyError: 'runs')" in report
    assert "Not measured yet (failed: RuntimeError: boom)" in report
    assert (
        "| 1 | Is it OK to initialize the bias terms to 0? | not reported (see its section) | – |" in report
    )
    assert "## Results" not in report  # no variants: no empty results table
