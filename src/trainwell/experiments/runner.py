"""Running an experiment: every variant (and seed) into its own run folder under one experiment folder.

``experiments/<name>[-quick]/`` (or ``--out DIR``) holds

- ``experiment.toml``: the experiment file as it was given;
- ``experiment.json``: the record of each run — its variant, seed, requested config, status, error and
  timings — and of the last invocation;
- one run folder per variant (``<variant>/``, or ``<variant>-seed<K>/`` with several seeds), laid out as
  :mod:`trainwell.runs` describes, plus ``mc_dropout.json`` for variants with ``mc_dropout``;
- one folder per analysis (``<analysis>/``: its sub-runs and ``study.json``, see
  :mod:`trainwell.experiments.studies`), run after the variants;
- the report (:mod:`trainwell.experiments.report`): ``report.html``, ``report.md``, ``results.json`` and
  ``figures/``.

Running the same command again skips finished runs, resumes unfinished ones from their last checkpoint
(:func:`trainwell.runs.resume_training`) and refuses to mix in a folder trained with a different config.
A run that fails is recorded and reported; the others still run.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainwell.config import config_to_dict
from trainwell.errors import RunError
from trainwell.experiments.spec import Experiment, PlannedRun, load_experiment, plan_analyses, plan_runs
from trainwell.io import write_json, write_text
from trainwell.runs import METRICS, load_run_config, load_run_model, resume_training, run_status, run_training
from trainwell.transfer.variants import resolve_variant_sources

EXPERIMENT_TOML, EXPERIMENT_JSON, MC_JSON = "experiment.toml", "experiment.json", "mc_dropout.json"


@dataclass
class RunOutcome:
    """What happened to one planned run in this invocation."""

    variant: str
    seed: int
    run_dir: Path
    action: str  # "trained", "resumed", "skipped" (finished before), "failed", "interrupted"
    error: str | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    mc: dict[str, Any] | None = None
    signal: int | None = None  # the signal that interrupted the run, if one did


@dataclass
class ExperimentResult:
    experiment_dir: Path
    outcomes: list[RunOutcome]
    seconds: float
    report: Path | None = None
    report_error: str | None = None
    interrupted: bool = False
    signal: int | None = None
    analyses: list[RunOutcome] = field(default_factory=list)  # variant = the analysis's name

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes + self.analyses if o.action == "failed"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def experiment_dir_for(
    experiment: Experiment, quick: bool, out: str | Path | None = None, root: str | Path = "experiments"
) -> Path:
    """``out``, or ``root/<name>`` (``-quick`` appended for the quick study, so the two never mix)."""
    if out is not None:
        return Path(out)
    return Path(root) / (experiment.spec.name + ("-quick" if quick else ""))


def read_record(experiment_dir: Path) -> dict[str, Any]:
    """``experiment.json`` of ``experiment_dir``, or an empty record for a new folder."""
    path = experiment_dir / EXPERIMENT_JSON
    if not path.is_file():
        return {"runs": {}}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(
            f"{path}: cannot read the experiment record ({e}); move the folder away or use --out"
        ) from None
    record.setdefault("runs", {})
    return record


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> list[str]:
    """``key: old → new`` for the keys whose values differ (lists compared whole), at most ``limit``."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    lines = [f"{k}: {_short(a.get(k, '(unset)'))} → {_short(b.get(k, '(unset)'))}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"... and {len(keys) - limit} more")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _requested_config_of_folder(run_dir: Path, plan: PlannedRun) -> dict[str, Any]:
    """What a folder without a record in experiment.json was trained with, comparable to ``plan.data``: its
    resolved config, with the learning rate put back to "auto" where the plan asks the LR finder for it."""
    data = config_to_dict(load_run_config(run_dir))
    if plan.data["train"]["optimizer"].get("learning_rate") == "auto":
        data["train"]["optimizer"]["learning_rate"] = "auto"
    return data


def check_existing_folders(plans: list[PlannedRun], experiment_dir: Path, record: dict[str, Any]) -> None:
    """Refuse to skip or resume a run folder trained with another config than the experiment now asks for."""
    problems = []
    for plan in plans:
        run_dir = experiment_dir / plan.folder
        if not (run_dir / "config.toml").is_file():
            continue
        recorded = record["runs"].get(plan.folder, {}).get("config")
        old = recorded if recorded is not None else _requested_config_of_folder(run_dir, plan)
        diff = config_differences(old, plan.data)
        if diff:
            problems.append(f"{run_dir} was trained with another config:\n    " + "\n    ".join(diff))
    if problems:
        raise RunError(
            "\n".join(problems) + "\nRe-running skips or resumes a run folder only with the config it "
            "was started with: remove those folders to retrain them, or give another --out folder"
        )


def mc_dropout_for_run(run_dir: Path, samples: int, seed: int) -> dict[str, Any]:
    """MC dropout on a finished run's validation and test sets (:func:`~trainwell.analysis.mc_dropout.compare_mc`),
    written to ``mc_dropout.json`` in the run folder."""
    from trainwell.analysis.mc_dropout import compare_mc
    from trainwell.data import load_dataset

    config = load_run_config(run_dir)
    dataset = load_dataset(config.data)
    model = load_run_model(run_dir, config, dataset.input_shape)
    result: dict[str, Any] = {"samples": samples, "seed": seed}
    if len(dataset.x_valid):
        result["valid"] = compare_mc(model, dataset.x_valid, dataset.y_valid, samples, seed=seed, curve=True)
    result["test"] = compare_mc(model, dataset.x_test, dataset.y_test, samples, seed=seed)
    write_json(run_dir / MC_JSON, result)
    return result


def _mc_needed(run_dir: Path, samples: int | None) -> bool:
    if samples is None:
        return False
    path = run_dir / MC_JSON
    if not path.is_file():
        return True
    try:
        return json.loads(path.read_text()).get("samples") != samples
    except (OSError, ValueError):
        return True


Say = Callable[[str], None]


def _train_one(plan: PlannedRun, run_dir: Path, progress: bool, say: Say) -> RunOutcome:
    """Train, resume or skip one run, then its MC-dropout step; errors are caught by the caller."""
    status = run_status(run_dir) if (run_dir / "config.toml").is_file() else "absent"
    outcome = RunOutcome(variant=plan.variant.name, seed=plan.seed, run_dir=run_dir, action="skipped")
    if status == "running":
        raise RunError(f"{run_dir}: another process is training this run; wait for it or stop it first")
    if status == "absent":
        say(f"training {plan.folder} → {run_dir}")
        result = run_training(plan.config, out=run_dir, progress=progress)
        outcome.action = "trained"
    elif status != "finished":
        say(f"resuming {plan.folder} ({status}) from its last checkpoint in {run_dir}")
        result = resume_training(run_dir, progress=progress)
        outcome.action = "resumed"
    else:
        say(f"{plan.folder}: finished before, skipped ({run_dir})")
        result = None
    if result is not None and result.interrupted:
        outcome.action, outcome.error = "interrupted", result.message or "interrupted"
        outcome.signal = result.signal
        return outcome
    if _mc_needed(run_dir, plan.variant.mc_dropout):
        say(f"{plan.folder}: MC dropout, {plan.variant.mc_dropout} samples")
        outcome.mc = mc_dropout_for_run(run_dir, plan.variant.mc_dropout, plan.config.train.seed)
    return outcome


def run_experiment(
    experiment: Experiment | str | Path,
    *,
    quick: bool = False,
    only: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    repeat: int | None = None,
    root: str | Path = "experiments",
    progress: bool = True,
    report: bool = True,
    say: Say | None = None,
) -> ExperimentResult:
    """Train every variant of ``experiment`` (a loaded :class:`Experiment`, a file or a preset name) and write
    the report: what ``trainwell run`` does.

    ``only`` restricts the variants; ``repeat`` overrides the file's number of seeds; ``say`` receives one
    line per event (the CLI prints them). Every config is validated, and existing run folders checked,
    before anything trains.
    """
    say = say or (lambda line: None)
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    plans = plan_runs(experiment, quick=quick, only=only, repeat=repeat)
    analyses = plan_analyses(experiment, quick=quick, only=only)
    experiment_dir = experiment_dir_for(experiment, quick, out, root)
    plans = resolve_variant_sources(experiment, plans, experiment_dir, quick=quick, repeat=repeat)  # "@variant"
    record = read_record(experiment_dir)
    check_existing_folders(plans, experiment_dir, record)
    try:
        experiment_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(
            f"cannot create the experiment folder {experiment_dir}: {e.strerror or e}; "
            "choose a writable --out"
        ) from None
    write_text(experiment_dir / EXPERIMENT_TOML, experiment.text)
    started, started_at = time.perf_counter(), _now()
    record.update(
        {
            "name": experiment.spec.name,
            "source": experiment.source,
            "quick": quick,
            "last_invocation": {
                "started": started_at,
                "only": list(only),
                "repeat": repeat,
                "status": "running",
            },
        }
    )
    # The variants and seeds of this invocation: the report shows these (and keeps others' records).
    for name in {p.variant.name for p in plans}:
        for folder, entry in list(record["runs"].items()):
            if entry.get("variant") == name and folder not in {p.folder for p in plans}:
                entry["current"] = False
    write_json(experiment_dir / EXPERIMENT_JSON, record)

    outcomes: list[RunOutcome] = []
    interrupted, stop_signal = False, None
    for index, plan in enumerate(plans, 1):
        run_dir = experiment_dir / plan.folder
        say(
            f"[{index}/{len(plans)}] {plan.variant.name}" + (f" (seed {plan.seed})" if len(plans) > 1 else "")
        )
        run_started = time.perf_counter()
        entry = record["runs"].setdefault(plan.folder, {})
        entry.update({"variant": plan.variant.name, "seed": plan.seed, "config": plan.data, "current": True})
        try:
            outcome = _train_one(plan, run_dir, progress, say)
        except KeyboardInterrupt:
            outcome = RunOutcome(
                plan.variant.name,
                plan.seed,
                run_dir,
                "interrupted",
                "KeyboardInterrupt",
                signal=int(signal.SIGINT),
            )
        except Exception as e:  # a failing variant is reported; the others still run
            outcome = RunOutcome(plan.variant.name, plan.seed, run_dir, "failed", f"{type(e).__name__}: {e}")
            entry["traceback"] = traceback.format_exc()
            say(f"{plan.folder} failed: {outcome.error}")
        else:
            entry.pop("traceback", None)
        outcome.seconds = time.perf_counter() - run_started
        outcomes.append(outcome)
        entry.update(
            {"status": outcome.action, "error": outcome.error, "seconds": outcome.seconds, "ended": _now()}
        )
        write_json(experiment_dir / EXPERIMENT_JSON, record)
        if outcome.action == "interrupted":
            interrupted, stop_signal = True, outcome.signal
            say(f"interrupted: {outcome.error}\nre-run the same command to continue where it stopped")
            break

    analysis_outcomes: list[RunOutcome] = []
    if analyses and not interrupted:  # the study steps, each into its own folder (trainwell.experiments.studies)
        from trainwell.experiments.studies import run_analyses

        analysis_outcomes = run_analyses(analyses, experiment_dir, record, progress=progress, say=say)
        stopped = next((o for o in analysis_outcomes if o.action == "interrupted"), None)
        if stopped is not None:
            interrupted, stop_signal = True, stopped.signal

    seconds = time.perf_counter() - started
    record["last_invocation"].update(
        {"ended": _now(), "seconds": seconds, "status": "interrupted" if interrupted else "finished"}
    )
    write_json(experiment_dir / EXPERIMENT_JSON, record)
    result = ExperimentResult(
        experiment_dir=experiment_dir,
        outcomes=outcomes,
        seconds=seconds,
        interrupted=interrupted,
        signal=stop_signal,
        analyses=analysis_outcomes,
    )
    for o in outcomes:
        if o.action in ("trained", "resumed", "skipped"):
            o.metrics = json.loads((o.run_dir / METRICS).read_text())
    if report:
        try:  # the import too: matplotlib, and the report sections other modules contribute
            from trainwell.experiments.report import build_report

            result.report = build_report(experiment_dir)
        except Exception as e:  # the runs are safe on disk; `trainwell report DIR` can retry
            result.report_error = f"{type(e).__name__}: {e}"
            say(
                f"the report could not be written: {result.report_error}; "
                f"fix it and run `trainwell report {experiment_dir}`"
            )
    return result
