"""The machinery every study shares: what a study is, where its sub-runs go, and how it is run and reported.

A *study* is one kind of ``[[analyses]]`` step (see :mod:`trainwell.experiments.spec`). It is a
:class:`Study`: its parameters (a :class:`~trainwell.spec.Spec`, validated when the experiment file is read),
a ``run`` function that trains what it needs and measures, and a ``report`` function that turns the measured
records into a report section and an answer — computed from the numbers, never written in advance.

An analysis's folder ``<experiment>/<analysis>/`` holds

- one run folder per sub-run (``<sub-run>/``, laid out as :mod:`trainwell.runs` describes), trained by
  :meth:`StudyContext.train`: finished ones are skipped, unfinished ones resumed from their last checkpoint,
  and a folder trained with another config is refused, as the runner does for variants; a run whose loss
  became NaN is a result ("diverged"), not retried;
- derived run folders (pruned, folded: :mod:`trainwell.analysis.derived`), made once by
  :meth:`StudyContext.derived`;
- ``analysis.json``: the record of each sub-run (config, status, error);
- ``study.json``: what ``run`` returned (plain records), with the fingerprint (kind, base config, params)
  it was measured with, its duration and how busy the machine was (load average, CPU count). Re-running with the same fingerprint skips the study; the report reads this file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from trainwell.config import Config, format_validation_error, validate_config
from trainwell.errors import RunError
from trainwell.experiments.spec import NAME_PATTERN, AnalysisSpec, PlannedAnalysis, PlannedRun, VariantSpec
from trainwell.io import write_json
from trainwell.registry import Registry
from trainwell.spec import Spec

if TYPE_CHECKING:  # the report package imports the studies (for their section): no import back at run time
    from trainwell.experiments.report.document import Answer, Block

STUDY_JSON, ANALYSIS_JSON = "study.json", "analysis.json"
# The status of a sub-run whose loss became NaN or inf: a measured outcome (e.g. of momentum 0.99999).
DIVERGED = "diverged"

Say = Callable[[str], None]


class StudyInterrupted(Exception):
    """A sub-run was stopped by a signal; the study stops too (re-running continues it)."""

    def __init__(self, message: str, signal_number: int | None):
        super().__init__(message)
        self.signal = signal_number


@dataclass
class SubRun:
    """A training run that a study needs: its folder name (under the analysis folder) and its config data."""

    name: str
    data: dict[str, Any]
    label: str = ""  # how tables and figures name it (default: the folder name)

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclass
class SubRunResult:
    """What :meth:`StudyContext.train` did with one sub-run."""

    name: str
    run_dir: Path
    status: str  # "trained", "resumed", "skipped" (finished before) or "diverged"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED


@dataclass
class StudyContext:
    """Everything a study's ``run`` gets: its analysis, base config, params, folder, and the helpers."""

    planned: PlannedAnalysis
    params: Any  # the study's validated params (an instance of Study.params)
    experiment_dir: Path
    progress: bool = True
    say: Say = field(default=lambda line: None)
    _datasets: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def analysis(self) -> AnalysisSpec:
        return self.planned.analysis

    @property
    def base(self) -> dict[str, Any]:
        """The analysis's base config as plain data ([base] with its set, and the quick tables)."""
        return self.planned.data

    @property
    def folder(self) -> Path:
        return self.experiment_dir / self.analysis.name

    def run_dir(self, name: str) -> Path:
        return self.folder / name

    def dataset(self, config: Config | None = None) -> Any:
        """The dataset of ``config`` (default: the base config), loaded once per ``[data]`` table."""
        from trainwell.data import load_dataset

        data = (config or self.planned.config).data
        key = data.model_dump_json()
        if key not in self._datasets:
            self._datasets[key] = load_dataset(data)
        return self._datasets[key]

    # --- sub-runs --------------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        path = self.folder / ANALYSIS_JSON
        if not path.is_file():
            return {"runs": {}}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunError(
                f"{path}: cannot read the analysis record ({e}); remove the folder to redo it"
            ) from None

    def train(self, runs: list[SubRun]) -> dict[str, SubRunResult]:
        """Train every sub-run of ``runs`` into its folder: skip finished ones, resume unfinished ones, refuse
        a folder trained with another config. All configs are validated (and folders checked) first."""
        from trainwell.config import config_to_dict
        from trainwell.experiments.runner import check_existing_folders

        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"sub-run names must be unique, got {names}")
        bad = [n for n in names if not re.fullmatch(NAME_PATTERN, n)]
        if bad:  # each is a folder name, and a VariantSpec name in the runner's checks
            raise ValueError(
                f"analysis {self.analysis.name!r}: the sub-run name {bad[0]!r} is not a valid folder name "
                "(letters, digits, '_', '.' and '-', starting with a letter or digit)"
            )
        where = f"analysis {self.analysis.name!r}"
        plans = []
        for run in runs:
            config = validate_config(run.data, source=f"{where}: sub-run {run.name!r}")
            plans.append(
                PlannedRun(
                    variant=VariantSpec(name=run.name),
                    seed=config.train.seed,
                    folder=f"{self.analysis.name}/{run.name}",
                    config=config,
                    data=config_to_dict(config),
                )
            )
        record = self._record()
        check_existing_folders(
            plans,
            self.experiment_dir,
            {"runs": {f"{self.analysis.name}/{k}": v for k, v in record["runs"].items()}},
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        results = {}
        for run, plan in zip(runs, plans, strict=True):
            entry = record["runs"].setdefault(run.name, {})
            entry["config"] = plan.data
            result = self._train_one(plan, entry)
            entry.update({"status": result.status, "error": result.error})
            write_json(self.folder / ANALYSIS_JSON, record)
            results[run.name] = result
        return results

    def _train_one(self, plan: PlannedRun, entry: dict[str, Any]) -> SubRunResult:
        from trainwell.runs import METRICS, resume_training, run_status, run_training
        from trainwell.train.terminate_on_nan import NonFiniteLossError

        name = plan.variant.name
        run_dir = self.experiment_dir / plan.folder
        status = run_status(run_dir) if (run_dir / "config.toml").is_file() else "absent"
        if status == "running":
            raise RunError(f"{run_dir}: another process is training this run; wait for it or stop it first")
        if status != "finished" and entry.get("status") == DIVERGED:
            self.say(f"{plan.folder}: diverged before, not retried")
            return SubRunResult(name, run_dir, DIVERGED, error=entry.get("error"))
        try:
            if status == "absent":
                self.say(f"training {plan.folder}")
                result, action = run_training(plan.config, out=run_dir, progress=self.progress), "trained"
            elif status != "finished":
                self.say(f"resuming {plan.folder} ({status})")
                result, action = resume_training(run_dir, progress=self.progress), "resumed"
            else:
                result, action = None, "skipped"
        except NonFiniteLossError as e:
            self.say(f"{plan.folder} diverged: {str(e).split('. ')[0]}")
            return SubRunResult(name, run_dir, DIVERGED, error=str(e))
        if result is not None and result.interrupted:
            raise StudyInterrupted(result.message or f"{plan.folder} was interrupted", result.signal)
        metrics = json.loads((run_dir / METRICS).read_text())
        return SubRunResult(name, run_dir, action, metrics)

    def derived(
        self, name: str, make: Callable[[Path], dict[str, Any]], done_file: str = "metrics.json"
    ) -> dict[str, Any]:
        """A derived folder (pruned, folded, exported) made once: ``make(out_dir)`` writes it and returns its
        numbers; when ``done_file`` is already there (the last file such a folder gets), its content is
        returned instead. A folder left half-made by a crash is removed and made again."""
        out = self.run_dir(name)
        done = out / done_file
        if done.is_file():
            return json.loads(done.read_text())
        if out.exists():
            shutil.rmtree(out)  # our own half-written folder: derived folders are not resumable
        self.say(f"making {self.analysis.name}/{name}")
        return make(out)


@dataclass
class StudyReport:
    """What a study's ``report`` returns: how it was measured, the results, and the answer."""

    experiment: str  # the experiment that answers the question, in words (from the config and params)
    blocks: list[Block]  # the measured results: tables and figures
    answer: Answer  # the question, the verdict derived from the numbers, and the evidence
    agrees: bool | None = None  # whether the measurement agrees with the textbook's answer (None: no claim)

    @classmethod
    def answered(
        cls, question: str, experiment: str, blocks: list[Block], verdict: tuple[str, list[str], bool | None]
    ) -> StudyReport:
        """The report of a study whose ``verdict`` function returned ``(verdict, evidence, agrees)``: the
        answer's tone follows the agreement with the textbook (neutral when the numbers settle nothing)."""
        from trainwell.experiments.report.document import Answer

        text, evidence, agrees = verdict
        tone = "neutral" if agrees is None else ("good" if agrees else "bad")
        return cls(experiment, blocks, Answer(question, text, evidence, tone), agrees)


@dataclass(frozen=True)
class Study:
    """A kind of analysis: its params, how it runs, and how it is reported.

    ``run(ctx)`` returns plain records (JSON-able), written to ``study.json``; ``report(rctx)`` reads them
    back (and the sub-runs' folders) and returns a :class:`StudyReport`.
    """

    kind: str
    title: str  # the report section's title
    question: str  # the default question (an analysis's ``question`` replaces it)
    textbook: str  # the chapter's answer, which the measurement is held against
    params: type[Spec]
    run: Callable[[StudyContext], dict[str, Any]]
    report: Callable[[Any], StudyReport]


def validate_params(study: Study, params: dict[str, Any], where: str) -> Any:
    """``params`` as the study's params spec, or a ValueError whose lines name ``where.key``."""
    try:
        return study.params.model_validate(params)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, prefix=where, data=params)) from None


def check_analysis(analysis: AnalysisSpec, studies: Registry[Study]) -> None:
    """Raise a ValueError naming the key when ``analysis`` has an unknown kind or invalid params (quick ones
    included), so that a typo is found when the experiment file is read."""
    from trainwell.errors import ConfigError

    try:
        study = studies[analysis.kind]
    except ConfigError as e:
        raise ValueError(f"analyses ({analysis.name}).kind: {e}") from None
    validate_params(study, analysis.resolved_params(False), f"analyses ({analysis.name}).params")
    if analysis.quick_params:
        validate_params(study, analysis.resolved_params(True), f"analyses ({analysis.name}).quick_params")


def fingerprint(planned: PlannedAnalysis) -> dict[str, Any]:
    """What a study's measurements depend on: re-running with the same fingerprint skips the study."""
    return {"kind": planned.analysis.kind, "config": planned.data, "params": planned.params}


def read_study(folder: Path) -> dict[str, Any] | None:
    """``study.json`` of an analysis folder, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / STUDY_JSON).read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def run_analyses(
    planned: list[PlannedAnalysis],
    experiment_dir: Path,
    record: dict[str, Any],
    studies: Registry[Study],
    *,
    progress: bool = True,
    say: Say | None = None,
) -> list[Any]:
    """Run each planned analysis (what ``trainwell run`` does after the variants) and record it in
    ``experiment.json``'s ``analyses``; a failing analysis is recorded and the others still run. Returns one
    :class:`~trainwell.experiments.runner.RunOutcome` per analysis (``variant`` is the analysis's name;
    ``action``: ``"analysed"``, ``"skipped"``, ``"failed"`` or ``"interrupted"``)."""
    from trainwell.experiments.runner import EXPERIMENT_JSON, RunOutcome

    say = say or (lambda line: None)
    outcomes = []
    for index, p in enumerate(planned, 1):
        name = p.analysis.name
        study = studies[p.analysis.kind]
        folder = experiment_dir / name
        say(f"[analysis {index}/{len(planned)}] {name} ({p.analysis.kind})")
        entry = record.setdefault("analyses", {}).setdefault(name, {})
        entry.update({"kind": p.analysis.kind, "current": True})
        started = time.perf_counter()
        outcome = RunOutcome(name, p.config.train.seed, folder, "analysed")
        previous = read_study(folder)
        if previous is not None and previous.get("fingerprint") == fingerprint(p):
            outcome.action = "skipped"
            say(f"{name}: measured before with the same config and params, skipped")
        else:
            ctx = StudyContext(
                p,
                validate_params(study, p.params, f"analyses ({name}).params"),
                experiment_dir,
                progress,
                say,
            )
            try:
                records = study.run(ctx)
                write_json(
                    folder / STUDY_JSON,
                    {
                        "kind": p.analysis.kind,
                        "name": name,
                        "fingerprint": fingerprint(p),
                        "measured": _now(),
                        "seconds": time.perf_counter() - started,
                        # how busy the machine was (1-minute load average at the end, and its CPU count): the
                        # study's wall-clock numbers mean little when the load is well above the CPU count
                        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                        "cpus": os.cpu_count(),
                        "records": records,
                    },
                )
                entry.pop("traceback", None)
            except StudyInterrupted as e:
                outcome.action, outcome.error, outcome.signal = "interrupted", str(e), e.signal
            except KeyboardInterrupt:
                outcome.action, outcome.error = "interrupted", "KeyboardInterrupt"
                outcome.signal = int(signal.SIGINT)
            except Exception as e:  # a failing analysis is reported; the others still run
                outcome.action, outcome.error = "failed", f"{type(e).__name__}: {e}"
                entry["traceback"] = traceback.format_exc()
                say(f"{name} failed: {outcome.error}")
        outcome.seconds = time.perf_counter() - started
        entry.update(
            {"status": outcome.action, "error": outcome.error, "seconds": outcome.seconds, "ended": _now()}
        )
        write_json(experiment_dir / EXPERIMENT_JSON, record)
        outcomes.append(outcome)
        if outcome.action == "interrupted":
            say(f"interrupted: {outcome.error}\nre-run the same command to continue where it stopped")
            break
    return outcomes
