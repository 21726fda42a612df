"""Running experiments on tiny data: folders and records, skipping finished runs, resuming unfinished ones
exactly, isolating failures, refusing changed configs, seeds, MC dropout and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.experiments.conftest import tiny_experiment, write_experiment
from trainwell.cli import main
from trainwell.errors import RunError
from trainwell.experiments import runner as runner_module
from trainwell.experiments.runner import run_experiment
from trainwell.train.callbacks import Callback


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_every_variant_gets_a_run_folder_and_the_report_their_numbers(tiny_file, tmp_path):
    out = tmp_path / "exp"
    result = run_experiment(tiny_file, out=out, progress=False)
    assert [(o.variant, o.action) for o in result.outcomes] == [("plain", "trained"), ("dropout", "trained")]
    assert result.experiment_dir == out and result.report == out / "report.html"
    for name in ("experiment.toml", "experiment.json", "report.html", "report.md", "results.json"):
        assert (out / name).is_file(), name
    results = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    for name in ("plain", "dropout"):
        metrics = metrics_of(out / name)
        for key in (
            "val_accuracy",
            "test_accuracy",
            "best_epoch",
            "epochs_run",
            "seconds_per_epoch",
            "train_seconds",
        ):
            assert results[name][key] == metrics[key]
        assert results[name]["learning_rate"] == 0.01
    record = json.loads((out / "experiment.json").read_text())
    assert record["runs"]["dropout"]["config"]["train"]["epochs"] == 3
    assert record["last_invocation"]["status"] == "finished"


def test_mc_dropout_step_matches_predict_mc_on_the_validation_set(tiny_file, tmp_path):
    from trainwell.analysis.mc_dropout import predict_mc
    from trainwell.data import load_dataset
    from trainwell.runs import load_run_config, load_run_model

    out = tmp_path / "exp"
    run_experiment(tiny_file, out=out, progress=False, only=["dropout"])
    mc = json.loads((out / "dropout" / "mc_dropout.json").read_text())
    config = load_run_config(out / "dropout")
    data = load_dataset(config.data)
    expected = predict_mc(load_run_model(out / "dropout"), data.x_valid, samples=20, seed=config.train.seed)
    assert mc["samples"] == 20 and mc["valid"]["examples"] == len(data.y_valid)
    assert mc["valid"]["mc_accuracy"] == pytest.approx(expected.accuracy(data.y_valid))
    results = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert results["dropout"]["mc_accuracy"] == mc["valid"]["mc_accuracy"]
    assert results["plain"]["status"] == "not run"


def test_rerunning_skips_finished_runs(tiny_file, tmp_path):
    out = tmp_path / "exp"
    run_experiment(tiny_file, out=out, progress=False)
    before = {n: (out / n / "model.pt").stat().st_mtime_ns for n in ("plain", "dropout")}
    again = run_experiment(tiny_file, out=out, progress=False)
    assert [o.action for o in again.outcomes] == ["skipped", "skipped"]
    assert {n: (out / n / "model.pt").stat().st_mtime_ns for n in before} == before
    assert again.outcomes[0].metrics == metrics_of(out / "plain")


class FailAtEpoch(Callback):
    """Raises at the end of epoch ``epoch`` (0-based) before the run recorder saves it, like a crash."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            raise RuntimeError("injected fault")


def test_a_failing_variant_is_reported_the_others_run_and_a_rerun_resumes_it_exactly(
    tiny_file, tmp_path, monkeypatch
):
    # The plain variant crashes in its second epoch (after the first epoch's checkpoint); dropout still trains.
    real = runner_module.run_training

    def crashing(config, **kw):
        if config.name.endswith("-plain"):
            kw["extra_callbacks"] = [FailAtEpoch(1)]
        return real(config, **kw)

    monkeypatch.setattr(runner_module, "run_training", crashing)
    out = tmp_path / "exp"
    first = run_experiment(tiny_file, out=out, progress=False)
    assert [(o.variant, o.action) for o in first.outcomes] == [("plain", "failed"), ("dropout", "trained")]
    assert "RuntimeError: injected fault" in first.outcomes[0].error
    assert first.report is not None
    results = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert results["plain"]["status"] == "failed" and "injected fault" in results["plain"]["errors"][0]
    assert "injected fault" in json.loads((out / "experiment.json").read_text())["runs"]["plain"]["traceback"]
    monkeypatch.setattr(runner_module, "run_training", real)

    second = run_experiment(tiny_file, out=out, progress=False)
    assert [o.action for o in second.outcomes] == ["resumed", "skipped"]
    resumed = metrics_of(out / "plain")
    assert resumed["resumed_from_epoch"] == 1
    # the same run without the crash, in another folder: the resumed one must match it exactly
    clean = run_experiment(tiny_file, out=tmp_path / "clean", progress=False, only=["plain"])
    assert clean.outcomes[0].action == "trained"
    straight = metrics_of(tmp_path / "clean" / "plain")
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch", "epochs_run"):
        assert resumed[key] == straight[key], key


def test_a_folder_trained_with_another_config_is_refused(tiny_file, tmp_path, blob_npz):
    out = tmp_path / "exp"
    run_experiment(tiny_file, out=out, progress=False)
    data = tiny_experiment(blob_npz)
    data["base"]["train"]["epochs"] = 4
    changed = write_experiment(tmp_path / "changed.toml", data)
    with pytest.raises(
        RunError, match=r"exp/plain was trained with another config:\n    train.epochs: 3 → 4"
    ):
        run_experiment(changed, out=out, progress=False)
    assert metrics_of(out / "plain")["epochs_run"] <= 3  # nothing was touched


def test_repeat_trains_seeds_and_reports_mean_and_std(tiny_file, tmp_path):
    out = tmp_path / "exp"
    result = run_experiment(tiny_file, out=out, progress=False, repeat=2, only=["plain"])
    assert [o.run_dir.name for o in result.outcomes] == ["plain-seed42", "plain-seed43"]
    accs = [metrics_of(out / f)["val_accuracy"] for f in ("plain-seed42", "plain-seed43")]
    plain = json.loads((out / "results.json").read_text())["variants"][0]
    assert plain["val_accuracy"] == pytest.approx(np.mean(accs))
    assert plain["val_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert plain["seeds"] == [42, 43]


def test_quick_goes_to_its_own_folder(tiny_file, tmp_path):
    result = run_experiment(tiny_file, quick=True, root=tmp_path, progress=False, only=["plain"])
    assert result.experiment_dir == tmp_path / "tiny-quick"
    assert metrics_of(tmp_path / "tiny-quick" / "plain")["epochs_run"] <= 2


def test_run_command_json_and_exit_codes(tiny_file, tmp_path, capsys, blob_npz):
    out = tmp_path / "exp"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["variant"] for r in printed["runs"]] == ["plain", "dropout"]
    assert printed["runs"][0]["val_accuracy"] == metrics_of(out / "plain")["val_accuracy"]
    # people's output: the table of results
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "plain" in text and "dropout" in text and "report:" in text
    # a variant that fails when it runs (its data file is missing): exit code 1, the other one still trains
    data = tiny_experiment(blob_npz)
    data["variants"][0]["set"] = {"data": {"path": str(tmp_path / "missing.npz")}}
    bad = write_experiment(tmp_path / "bad.toml", data)
    assert main(["run", str(bad), "--out", str(tmp_path / "bad"), "--quiet"]) == 1
    assert (
        "failed:" in capsys.readouterr().err
        and "missing.npz" in (tmp_path / "bad" / "experiment.json").read_text()
    )
    assert (tmp_path / "bad" / "dropout" / "metrics.json").is_file()
    assert main(["run", "no-such-preset"]) == 2
