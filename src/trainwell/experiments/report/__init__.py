"""The experiment report: ``report.html`` (one self-contained file), ``report.md``, ``figures/*.png`` and
``results.json``, all rebuilt from the experiment folder by :func:`build_report` (``trainwell report DIR``).

The report is a list of sections (:data:`~trainwell.experiments.report.sections.SECTIONS`); a section is a
function ``(experiment_dir, variants) -> Section | None``, so a new one is added with one line.

``results.json``: ``{"experiment", "description", "quick", "generated", "variants": [{name, val_accuracy,
test_accuracy, best_epoch, epochs_run, seconds_per_epoch, train_seconds, learning_rate, mc_accuracy?, ...}]}``
— means over seeds, with ``*_std`` beside them when a variant ran with several seeds; ``mc_accuracy`` is the
validation accuracy of the MC-dropout mean prediction, ``mc_test_accuracy`` its test accuracy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainwell.experiments.report.collect import (
    ExperimentInfo,
    VariantRuns,
    load_experiment_runs,
    variant_result,
)
from trainwell.experiments.report.document import (
    Answer,
    Bullets,
    Figure,
    KeyNumbers,
    Section,
    Table,
    Text,
    render_html,
    render_markdown,
)
from trainwell.experiments.report.sections import SECTIONS, SectionFn
from trainwell.io import write_json, write_text

REPORT_HTML, REPORT_MD, RESULTS_JSON = "report.html", "report.md", "results.json"

__all__ = [
    "SECTIONS",
    "Answer",
    "Bullets",
    "Figure",
    "KeyNumbers",
    "Section",
    "SectionFn",
    "Table",
    "Text",
    "VariantRuns",
    "build_report",
    "results_document",
]


def results_document(info: ExperimentInfo, variants: list[VariantRuns], generated: str) -> dict[str, Any]:
    return {
        "experiment": info.spec.name,
        "description": info.spec.description,
        "quick": info.quick,
        "generated": generated,
        "last_invocation_seconds": info.record.get("last_invocation", {}).get("seconds"),
        "variants": [variant_result(v) for v in variants],
    }


def _meta(info: ExperimentInfo, variants: list[VariantRuns], generated: str) -> str:
    run = next((r for v in variants for r in v.runs if r.info), None)
    analyses = len(info.spec.analyses)
    parts = [f"{len(variants)} variants"] if variants or not analyses else []
    if analyses:
        parts.append(f"{analyses} {'analysis' if analyses == 1 else 'analyses'}")
    seeds = max((len(v.runs) for v in variants), default=1)
    if seeds > 1:
        parts.append(f"{seeds} seeds each")
    if run is not None:
        parts.append(f"trained on {run.info.get('device', '?')} with torch {run.info.get('torch', '?')}")
        source = str(run.info.get("data_source", ""))
        if source:
            parts.append(f"data: {Path(source.split(' (')[0]).name}")
    parts.append(f"report written {generated.replace('T', ' ', 1)}")
    return " · ".join(parts)


def build_report(experiment_dir: str | Path, sections: list[SectionFn] | None = None) -> Path:
    """Write the report of ``experiment_dir`` (HTML, Markdown, PNGs, results.json); returns report.html's path."""
    experiment_dir = Path(experiment_dir)
    info, variants = load_experiment_runs(experiment_dir)
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M UTC")
    built = [
        section
        for fn in (sections if sections is not None else SECTIONS)
        if (s := fn(experiment_dir, variants))
        for section in (s if isinstance(s, list) else [s])  # a function may return several sections
    ]
    title = info.spec.name
    subtitle = info.spec.description
    meta = _meta(info, variants, generated)
    write_text(
        experiment_dir / REPORT_MD,
        render_markdown(
            title + (" (quick)" if info.quick else ""), subtitle + "\n\n" + meta, built, experiment_dir
        ),
    )
    write_text(
        experiment_dir / REPORT_HTML,
        render_html(title, subtitle, meta, built, badge="quick study" if info.quick else ""),
    )
    write_json(experiment_dir / RESULTS_JSON, results_document(info, variants, generated))
    return experiment_dir / REPORT_HTML
