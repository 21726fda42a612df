"""Diagnostics: see, layer by layer, why a deep net trains badly (the chapter's unstable gradients).

- :mod:`.probes`: hooks on a fixed probe batch → plain records (activations, gradients, updates);
- :mod:`.findings`: pure rules, records → findings with the chapter's remedies;
- :mod:`.recorder`: the training callback behind ``train.diagnostics`` (``diagnostics.jsonl``);
- :mod:`.diagnosis`: :func:`diagnose`, what ``trainwell diagnose CONFIG`` runs;
- :mod:`.report`: the plots and the experiment report's section.
"""

from trainwell.analysis.diagnostics.diagnosis import Diagnosis, diagnose
from trainwell.analysis.diagnostics.findings import FINDING_CODES, Finding, judge
from trainwell.analysis.diagnostics.probes import probe, probe_batch
from trainwell.analysis.diagnostics.recorder import DiagnosticsRecorder, DiagnosticsSpec, read_records

__all__ = [
    "FINDING_CODES",
    "DiagnosticsRecorder",
    "DiagnosticsSpec",
    "Diagnosis",
    "Finding",
    "diagnose",
    "judge",
    "probe",
    "probe_batch",
    "read_records",
]
