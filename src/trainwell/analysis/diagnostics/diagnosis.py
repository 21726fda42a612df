"""``diagnose(config)``: build the model, probe it at initialization and after a few training steps, judge.

What ``trainwell diagnose CONFIG`` does: load the data, build the model with the config's seed, probe it,
train it for ``steps`` optimizer steps with the config's optimizer (measuring every step's update), probe it
again, and run the finding rules on the records. Findings are advice, not errors: a diverging run (NaN loss)
is itself a finding (``exploding_gradients``), not an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainwell.analysis.diagnostics.findings import Finding, judge, median_update_ratios
from trainwell.analysis.diagnostics.probes import PROBE_SIZE, probe, probe_batch
from trainwell.analysis.diagnostics.recorder import DiagnosticsRecorder
from trainwell.errors import TrainingError
from trainwell.train.callbacks import Callback

if TYPE_CHECKING:  # config imports this package (for DiagnosticsSpec): import it lazily at run time
    from trainwell.config import Config

# Long enough for a too-large learning rate to kill ReLUs (the dying-relu preset loses them within ~50
# steps), short enough to take seconds on a CPU.
DEFAULT_STEPS = 100
# The per-layer numbers of a probe record shown in a diagnosis (the histogram stays in the records).
LAYER_STATS = (
    "output_mean",
    "output_std",
    "saturated_fraction",
    "dead_units",
    "dead_fraction",
    "nonfinite_fraction",
    "weight_norm",
    "grad_norm",
    "grad_rms",
    "grad_to_weight_ratio",
    "kernel_mean_square_x_fan_in",
    "symmetric_units",
)


class StopAfter(Callback):
    """Stop training after ``steps`` optimizer steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, trainer: Any, step: int) -> None:
        if step >= self.steps:
            trainer.stop_training = True


@dataclass
class Diagnosis:
    """The records of a diagnosis, its findings, and how many steps were trained (``note``: why fewer)."""

    records: list[dict[str, Any]]
    findings: list[Finding]
    steps: int
    note: str | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def probes(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["record"] == "probe"]

    def layers(self) -> list[dict[str, Any]]:
        """Per layer: name, kind, activation, units, its numbers at init and after the steps (``after`` is
        absent when no step was trained), and the median update ratio of the measured steps."""
        probes = self.probes
        first, last = probes[0], probes[-1]
        medians = median_update_ratios(r for r in self.records if r["record"] == "update")
        rows = []
        for i, layer in enumerate(first["layers"]):
            row: dict[str, Any] = {k: layer[k] for k in ("name", "kind", "activation", "units", "output")}
            row["init"] = {k: layer[k] for k in LAYER_STATS if k in layer}
            if last is not first:
                row["after"] = {k: last["layers"][i][k] for k in LAYER_STATS if k in last["layers"][i]}
            if layer["name"] in medians:
                value = medians[layer["name"]]
                row["update_ratio_median"] = value if math.isfinite(value) else str(value)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``{steps, probe_size, loss, note, layers, findings}``: what ``--json`` prints."""
        probes = self.probes
        return {
            "steps": self.steps,
            "probe_size": probes[0]["probe_size"],
            "loss": {"init": probes[0]["loss"], "after": probes[-1]["loss"]},
            "note": self.note,
            "layers": self.layers(),
            "findings": [f.to_dict() for f in self.findings],
            "plots": [str(p) for p in self.plots],
        }


def config_preconditions(config: Config) -> list[str]:
    """The conditions of self-normalization that ``config`` breaks, as :mod:`trainwell.nn.selfnorm` words them
    (none for a net without SELU). Not silenced by ``model.check_self_normalization = false``: that switch is
    for training's warnings, and a diagnosis of a drifting SELU net should say why it drifts."""
    from trainwell.nn.selfnorm import self_normalization_problems

    return [str(problem) for problem in self_normalization_problems(config.model, config.data.scaling)]


def diagnose(
    config: Config | str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    probe_size: int = PROBE_SIZE,
    overrides: list[str] | tuple[str, ...] = (),
    dataset: Any = None,
    thresholds: dict[str, dict[str, Any]] | None = None,
    plots: str | Path | None = None,
) -> Diagnosis:
    """Diagnose the model of ``config`` (a :class:`~trainwell.config.Config` or a config file path).

    Args:
        steps: optimizer steps to train between the two probes (0: probe at initialization only).
        probe_size: examples in the probe batch (a fixed random sample of the training split).
        overrides: ``dotted.key=value`` overrides when ``config`` is a path.
        dataset: the loaded dataset (default: ``load_dataset(config.data)``).
        thresholds: rule thresholds by finding code (see :func:`~trainwell.analysis.diagnostics.findings.judge`).
        plots: a folder to write the diagnosis plots to (PNG).
    """
    from trainwell.config import Config, load_config
    from trainwell.data import load_dataset
    from trainwell.nn.build import build_model
    from trainwell.runs import check_model_fits_data, config_callbacks
    from trainwell.train.loop import fit

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    if dataset is None:
        dataset = load_dataset(config.data)
    check_model_fits_data(config, len(dataset.classes))
    if thresholds:
        from trainwell.analysis.diagnostics.findings import check_thresholds

        check_thresholds(thresholds)  # before spending time on training
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dataset.input_shape)
    x, y = probe_batch(dataset.x_train, dataset.y_train, probe_size)
    note = None
    if steps == 0:
        records = [probe(model, x, y, loss=config.train.loss, moment="init")]
        done = 0
    else:
        recorder = DiagnosticsRecorder(x, y, every=steps, loss=config.train.loss, update_steps=steps)
        # The first `steps` steps of the config's own training: its epochs (so LR schedules keep their shape)
        # and its other callbacks (schedules, pruning), but no early stopping or recording of its own, and the
        # eager step (a compile would not pay for itself in a few hundred steps).
        train = config.train.model_copy(
            update={"early_stopping": None, "diagnostics": None, "compile": False}
        )
        callbacks = config_callbacks(config.model_copy(update={"train": train}), model, None, dataset)
        try:
            state = fit(model, dataset, train, callbacks=[*callbacks, recorder, StopAfter(steps)])
            done = state.step
        except TrainingError as e:  # the loss became inf/NaN: the probes say where it came from
            done = recorder.trainer.step
            note = f"training stopped after {done} steps: {str(e).split(';')[0]}"
        recorder.probe_now(recorder.trainer, "end")
        records = recorder.records
    findings = judge(records, thresholds=thresholds, broken_preconditions=config_preconditions(config))
    diagnosis = Diagnosis(records, findings, done, note)
    if plots is not None:
        from trainwell.analysis.diagnostics.report import diagnosis_plots

        diagnosis.plots = diagnosis_plots(records, Path(plots))
    return diagnosis


def is_experiment(source: str | Path) -> bool:
    """Whether ``source`` names an experiment (a built-in preset, or a TOML file with a ``[base]`` table)
    rather than a plain config."""
    from trainwell.config import read_toml
    from trainwell.experiments.spec import preset_names

    path = Path(source)
    if path.is_file():
        return "base" in read_toml(path)
    return str(source) in preset_names()


def diagnose_experiment(
    source: str | Path,
    *,
    variants: list[str] | tuple[str, ...] = (),
    quick: bool = False,
    steps: int = DEFAULT_STEPS,
    probe_size: int = PROBE_SIZE,
    thresholds: dict[str, dict[str, Any]] | None = None,
    plots: str | Path | None = None,
) -> dict[str, Diagnosis]:
    """:func:`diagnose` for every variant of an experiment file or preset (``variants``: only these), by name.

    Each variant's config is the experiment's (``quick``: with its ``[quick]`` tables); datasets are loaded
    once per distinct ``[data]`` table. Plots go to ``plots/<variant>/``.
    """
    from trainwell.data import load_dataset
    from trainwell.experiments.spec import load_experiment, plan_runs

    runs = plan_runs(load_experiment(source), quick=quick, only=list(variants), repeat=1)
    datasets: dict[str, Any] = {}
    results: dict[str, Diagnosis] = {}
    for run in runs:
        key = run.config.data.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(run.config.data)
        results[run.variant.name] = diagnose(
            run.config,
            steps=steps,
            probe_size=probe_size,
            dataset=datasets[key],
            thresholds=thresholds,
            plots=Path(plots) / run.variant.name if plots is not None else None,
        )
    return results
