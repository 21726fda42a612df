"""What a report is made from: an experiment folder read back into plain records, one per variant and run.

Everything comes from files (``experiment.toml``, ``experiment.json`` and each run folder's ``history.csv``,
``metrics.json``, ``run.json``, ``config.toml``, ``mc_dropout.json``, ``steps.csv``, ``lr_finder.json``), so
a report can be rebuilt at any time, also for an experiment that is still running or partly failed.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwell.errors import RunError
from trainwell.experiments.runner import EXPERIMENT_JSON, EXPERIMENT_TOML, MC_JSON
from trainwell.experiments.spec import ExperimentSpec, parse_experiment

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/), yellow last: it is faint on
# white. A variant keeps its colour by its place in the experiment file, whatever subset ran.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C564B", "#F0E442")


def variant_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Stat:
    """A value over seeds: mean, sample standard deviation (0 for one seed) and the number of seeds."""

    mean: float
    std: float
    n: int


def stat(values: list[float]) -> Stat | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


@dataclass
class RunRecord:
    """One run folder of the experiment, read back."""

    variant: str
    seed: int
    folder: str
    run_dir: Path
    status: str  # finished, failed, interrupted, crashed, running, new, missing
    error: str | None = None
    config: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    mc: dict[str, Any] | None = None
    steps: list[dict[str, float]] | None = None
    lr_finder: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def column(self, key: str) -> list[float]:
        return [row.get(key, math.nan) for row in self.history]

    def elapsed(self) -> list[float]:
        """Wall-clock seconds at the end of each epoch (training and validation), from the start."""
        total, out = 0.0, []
        for row in self.history:
            total += row.get("seconds", 0.0)
            out.append(total)
        return out

    def learning_rate(self) -> tuple[float | None, str]:
        """The learning rate that characterises the run, and where it came from."""
        metrics = self.metrics or {}
        if metrics.get("found_learning_rate") is not None:
            return float(metrics["found_learning_rate"]), "LR finder"
        train = (self.config or {}).get("train", {})
        schedule = train.get("schedule") or {}
        if schedule.get("name") == "one_cycle":
            return float(schedule["max_lr"]), "1cycle peak"
        lr = train.get("optimizer", {}).get("learning_rate")
        if isinstance(lr, int | float):
            return float(lr), "fixed" if not schedule else f"{schedule.get('name')} start"
        return metrics.get("learning_rate"), ""


@dataclass
class VariantRuns:
    """A variant of the experiment and its runs (one per seed)."""

    name: str
    description: str
    index: int
    color: str
    mc_dropout: int | None
    baseline: str | None  # the variant this one is compared with
    question: str | None
    reference: dict[str, Any] | None
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.runs if r.finished]

    def stat(self, key: str) -> Stat | None:
        """``key`` of metrics.json over the finished runs."""
        return stat([r.metrics.get(key) for r in self.finished])

    def mc_stat(self, key: str, split: str = "valid") -> Stat | None:
        return stat([r.mc[split].get(key) for r in self.finished if r.mc and split in r.mc])

    def mean_curve(self, key: str) -> list[float]:
        """``key`` per epoch averaged over the finished runs, as long as the shortest of them."""
        curves = [r.column(key) for r in self.finished if r.history]
        if not curves:
            return []
        length = min(len(c) for c in curves)
        return [statistics.fmean(c[i] for c in curves) for i in range(length)]

    def mean_elapsed(self) -> list[float]:
        curves = [r.elapsed() for r in self.finished if r.history]
        if not curves:
            return []
        length = min(len(c) for c in curves)
        return [statistics.fmean(c[i] for c in curves) for i in range(length)]


@dataclass
class ExperimentInfo:
    """The experiment as a whole: its spec, whether it is the quick study, and the record of the last run."""

    spec: ExperimentSpec
    directory: Path
    quick: bool
    record: dict[str, Any]

    @property
    def title(self) -> str:
        return self.spec.name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict[str, float]] | None:
    try:
        with open(path, newline="") as f:
            return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except OSError:
        return None


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _read_config(path: Path) -> dict[str, Any] | None:
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_run(variant: str, seed: int, folder: str, run_dir: Path, entry: dict[str, Any]) -> RunRecord:
    """Everything a run folder holds that the report uses; missing files are simply absent."""
    record = RunRecord(
        variant=variant, seed=seed, folder=folder, run_dir=run_dir, status="missing", error=entry.get("error")
    )
    if not run_dir.is_dir():
        if entry.get("status") == "failed":
            record.status = "failed"
        return record
    record.config = _read_config(run_dir / "config.toml")
    record.history = _read_csv(run_dir / "history.csv") or []
    record.metrics = _read_json(run_dir / "metrics.json")
    record.info = _read_json(run_dir / "run.json")
    record.mc = _read_json(run_dir / MC_JSON)
    record.steps = _read_csv(run_dir / "steps.csv")
    record.lr_finder = _read_json(run_dir / "lr_finder.json")
    if record.metrics is not None:
        record.status = "finished"
        record.error = None
    elif entry.get("status") == "failed":
        record.status = "failed"
    elif record.info is not None:
        record.status = str(record.info.get("status", "new"))
        record.error = record.error or record.info.get("error")
    return record


def read_info(experiment_dir: str | Path) -> ExperimentInfo:
    """The experiment of ``experiment_dir``: its file (as copied there) and its record."""
    experiment_dir = Path(experiment_dir)
    record_path, toml_path = experiment_dir / EXPERIMENT_JSON, experiment_dir / EXPERIMENT_TOML
    if not record_path.is_file() or not toml_path.is_file():
        raise RunError(
            f"{experiment_dir}: not an experiment folder (no {EXPERIMENT_JSON} and {EXPERIMENT_TOML}); "
            "give a folder made by `trainwell run`"
        )
    spec = parse_experiment(toml_path.read_text(encoding="utf-8"), str(toml_path)).spec
    record = _read_json(record_path)
    if record is None:
        raise RunError(f"{record_path}: unreadable experiment record; re-run `trainwell run` to rewrite it")
    record.setdefault("runs", {})
    return ExperimentInfo(spec=spec, directory=experiment_dir, quick=bool(record.get("quick")), record=record)


def load_experiment_runs(experiment_dir: str | Path) -> tuple[ExperimentInfo, list[VariantRuns]]:
    """The experiment in ``experiment_dir`` and its variants, in the file's order, with their current runs."""
    info = read_info(experiment_dir)
    variants = []
    for index, v in enumerate(info.spec.variants):
        vr = VariantRuns(
            name=v.name,
            description=v.description,
            index=index,
            color=variant_color(index),
            mc_dropout=v.mc_dropout,
            baseline=info.spec.baseline_of(v),
            question=v.question,
            reference=v.reference.model_dump(exclude_none=True) if v.reference else None,
        )
        entries = sorted(
            (
                (folder, e)
                for folder, e in info.record["runs"].items()
                if e.get("variant") == v.name and e.get("current", True)
            ),
            key=lambda fe: fe[1]["seed"],
        )
        vr.runs = [read_run(v.name, e["seed"], folder, info.directory / folder, e) for folder, e in entries]
        variants.append(vr)
    return info, variants


def variant_result(v: VariantRuns) -> dict[str, Any]:
    """One entry of results.json's ``variants`` list: means over seeds (with ``*_std`` when several)."""
    out: dict[str, Any] = {"name": v.name, "description": v.description}
    keys = ("val_accuracy", "test_accuracy", "best_epoch", "epochs_run", "seconds_per_epoch", "train_seconds")
    for key in keys:
        s = v.stat(key)
        out[key] = (s.mean if s.n > 1 else v.finished[0].metrics[key]) if s else None  # one seed: as recorded
        if s and s.n > 1:
            out[f"{key}_std"] = s.std
    lrs = [r.learning_rate() for r in v.finished]
    out["learning_rate"] = lrs[0][0] if len(lrs) == 1 else (stat([lr for lr, _ in lrs]).mean if lrs else None)
    out["learning_rate_source"] = lrs[0][1] if lrs else None
    if v.mc_dropout:
        for key, split in (("mc_accuracy", "valid"), ("mc_test_accuracy", "test")):
            s = v.mc_stat("mc_accuracy", split)
            out[key] = s.mean if s else None
        out["mc_samples"] = v.mc_dropout
    out["seeds"] = [r.seed for r in v.runs]
    out["status"] = (
        "not run"
        if not v.runs
        else "finished"
        if len(v.finished) == len(v.runs)
        else "failed"
        if any(r.status == "failed" for r in v.runs)
        else "unfinished"
    )
    errors = [f"{r.folder}: {r.error}" for r in v.runs if r.error and not r.finished]
    if errors:
        out["errors"] = errors
    out["runs"] = [
        {
            "seed": r.seed,
            "folder": r.folder,
            "status": r.status,
            **{k: (r.metrics or {}).get(k) for k in keys},
        }
        for r in v.runs
    ]
    return out
