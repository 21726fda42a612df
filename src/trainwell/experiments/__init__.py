"""Experiments: a base config and named variants of it, trained side by side and reported together.

- :mod:`~trainwell.experiments.spec`: the experiment file format (documented there) and the built-in presets;
- :mod:`~trainwell.experiments.runner`: ``run_experiment`` — every variant in its own run folder, resumable;
- :mod:`~trainwell.experiments.report`: ``build_report`` — report.html, report.md, figures and results.json.
"""

from trainwell.experiments.runner import ExperimentResult, RunOutcome, run_experiment
from trainwell.experiments.spec import Experiment, ExperimentSpec, load_experiment, plan_runs, preset_names

__all__ = [
    "Experiment",
    "ExperimentResult",
    "ExperimentSpec",
    "RunOutcome",
    "load_experiment",
    "plan_runs",
    "preset_names",
    "run_experiment",
]
