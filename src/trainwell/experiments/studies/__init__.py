"""Studies: the kinds of ``[[analyses]]`` step an experiment file can hold (see
:mod:`trainwell.experiments.spec`), each a :class:`~trainwell.experiments.studies.base.Study` registered in
:data:`STUDIES` by its ``kind``.

- :mod:`~trainwell.experiments.studies.base`: what a study is, its sub-runs and ``study.json``;
- :mod:`~trainwell.experiments.studies.report`: the report's analyses sections (an answer per study);
- :mod:`~trainwell.experiments.studies.nets`: layer lists for studies (deep stacks, changed hidden layers).

To add a kind, write a module defining a ``Study`` and add it to :data:`STUDIES` — one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainwell.experiments.spec import AnalysisSpec, PlannedAnalysis
from trainwell.experiments.studies import base
from trainwell.experiments.studies.activations import ACTIVATION_CHOICE, SELU_VS_RELU
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.dropout import DROPOUT_COST
from trainwell.experiments.studies.initialization import SYMMETRIC_INIT, ZERO_BIAS
from trainwell.experiments.studies.latency import LOW_LATENCY
from trainwell.experiments.studies.momentum import MOMENTUM_TOO_HIGH
from trainwell.experiments.studies.sparsity import SPARSITY
from trainwell.registry import Registry

# Every study kind, by the name an ``[[analyses]]`` entry gives as its ``kind``.
STUDIES: Registry[Study] = Registry(
    "study",
    {
        study.kind: study
        for study in (
            SYMMETRIC_INIT,  # question 1
            ZERO_BIAS,  # question 2
            SELU_VS_RELU,  # question 3
            ACTIVATION_CHOICE,  # question 4
            MOMENTUM_TOO_HIGH,  # question 5
            SPARSITY,  # question 6 (the deploy issue's comparison)
            DROPOUT_COST,  # question 7
            LOW_LATENCY,  # the low-latency recipe (issue 9)
        )
    },
)


def check_analysis(analysis: AnalysisSpec) -> None:
    """Raise a ValueError naming the key when ``analysis`` has an unknown kind or invalid params."""
    base.check_analysis(analysis, STUDIES)


def run_analyses(
    planned: list[PlannedAnalysis],
    experiment_dir: Path,
    record: dict[str, Any],
    *,
    progress: bool = True,
    say: base.Say | None = None,
) -> list[Any]:
    """Run the planned analyses with the registered studies (see :func:`base.run_analyses`)."""
    return base.run_analyses(planned, experiment_dir, record, STUDIES, progress=progress, say=say)


__all__ = ["STUDIES", "Study", "StudyContext", "StudyReport", "SubRun", "check_analysis", "run_analyses"]
