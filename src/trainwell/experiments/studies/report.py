"""The analyses in the experiment report: an "answers at a glance" table, then one section per analysis —
the experiment that answers its question, the measured results, and the answer derived from them.

:func:`analyses_sections` is the report section function (registered in
:data:`trainwell.experiments.report.sections.SECTIONS`); each study's ``report`` gets a :class:`ReportContext`
with its records and helpers to read its sub-runs the way the rest of the report reads variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwell.experiments.report import figures
from trainwell.experiments.report.collect import RunRecord, VariantRuns, read_info, read_run, variant_color
from trainwell.experiments.report.document import Answer, Section, Table, Text
from trainwell.experiments.spec import AnalysisSpec
from trainwell.experiments.studies.base import ANALYSIS_JSON, STUDY_JSON, Study, read_study


@dataclass
class ReportContext:
    """What a study's ``report`` gets: its records (``study.json``), params, and its sub-runs on disk."""

    experiment_dir: Path
    analysis: AnalysisSpec
    study: Study
    params: Any  # the study's params, validated
    records: dict[str, Any]
    quick: bool = False

    @property
    def folder(self) -> Path:
        return self.experiment_dir / self.analysis.name

    def figure(self, name: str, fig: Any) -> Path:
        """Write ``fig`` as ``figures/<analysis>-<name>.png``; its path."""
        return figures.save(fig, self.experiment_dir / figures.FIGURES / f"{self.analysis.name}-{name}.png")

    def _entries(self) -> dict[str, Any]:
        try:
            import json

            return json.loads((self.folder / ANALYSIS_JSON).read_text()).get("runs", {})
        except (OSError, ValueError):
            return {}

    def run(self, name: str) -> RunRecord:
        """The sub-run ``name`` read back as the report reads a variant's run (history, metrics, ...)."""
        entry = self._entries().get(name, {})
        config = entry.get("config") or {}
        seed = int(config.get("train", {}).get("seed", 0))
        return read_run(name, seed, f"{self.analysis.name}/{name}", self.folder / name, entry)

    def group(self, label: str, names: list[str], index: int, description: str = "") -> VariantRuns:
        """Sub-runs ``names`` (one per seed) as one variant named ``label``, in the palette's colour
        ``index``, so that :mod:`~trainwell.experiments.report.answers` and ``figures`` apply to them."""
        group = VariantRuns(
            name=label,
            description=description,
            index=index,
            color=variant_color(index),
            mc_dropout=None,
            baseline=None,
            question=None,
            reference=None,
        )
        group.runs = [self.run(n) for n in names]
        return group

    def diagnostics(self, name: str) -> list[dict[str, Any]]:
        """The diagnostics records of sub-run ``name`` (empty when it recorded none)."""
        from trainwell.analysis.diagnostics.recorder import RECORDS_FILE, read_records

        path = self.folder / name / RECORDS_FILE
        return read_records(path) if path.is_file() else []


def textbook_line(study: Study, agrees: bool | None) -> str:
    verdict = {
        True: "the measurement agrees.",
        False: "**the measurement contradicts it.**",
        None: "the measurement does not settle it.",
    }[agrees]
    return f"*The chapter's answer:* {study.textbook} — {verdict}"


AGREES_TEXT = {True: "agrees", False: "contradicts", None: "not settled"}


def analyses_sections(experiment_dir: Path, variants: list[VariantRuns]) -> list[Section] | None:
    """The analyses' sections, after an "answers at a glance" table (None when the experiment has none)."""
    from trainwell.experiments.studies import STUDIES  # at call time: the studies import the report package

    info = read_info(experiment_dir)
    if not info.spec.analyses:
        return None
    record = info.record.get("analyses", {})
    sections: list[Section] = []
    glance: list[list[str]] = []
    for number, analysis in enumerate(info.spec.analyses, 1):
        study = STUDIES[analysis.kind]
        question = analysis.question or study.question
        title = f"{number}. {study.title}" if len(info.spec.analyses) > 1 else study.title
        stored = read_study(experiment_dir / analysis.name)
        entry = record.get(analysis.name, {})
        if stored is None:
            status = entry.get("status", "not run")
            error = entry.get("error")
            why = f"{status}: {error}" if error else status
            sections.append(
                Section(
                    title,
                    [
                        Text(f"**{question}**"),
                        Text(
                            f"Not measured yet ({why}). Re-running the same `trainwell run` command continues "
                            f"where it stopped; the traceback of a failure is in experiment.json."
                        ),
                    ],
                )
            )
            glance.append([str(number), question, f"not measured ({status})", "–"])
            continue
        try:
            params = study.params.model_validate(stored["fingerprint"]["params"])
            rctx = ReportContext(experiment_dir, analysis, study, params, stored["records"], info.quick)
            result = study.report(rctx)
        except (
            Exception
        ) as e:  # one study's broken records (e.g. from an older version) spoil only its section
            why = f"{type(e).__name__}: {e}"
            sections.append(
                Section(
                    title,
                    [
                        Text(f"**{question}**"),
                        Text(
                            f"Its records in {analysis.name}/{STUDY_JSON} could not be reported ({why}). Remove "
                            f"{analysis.name}/{STUDY_JSON} and re-run the same `trainwell run` command to measure "
                            "it again (finished sub-runs are kept)."
                        ),
                    ],
                )
            )
            glance.append([str(number), question, "not reported (see its section)", "–"])
            continue
        answer = Answer(
            question=question,
            verdict=result.answer.verdict,
            evidence=[*result.answer.evidence, textbook_line(study, result.agrees)],
            tone=result.answer.tone,
        )
        experiment = result.experiment + (f" {analysis.description}" if analysis.description else "")
        measured = f"Measured in {_duration(stored.get('seconds'))}" if stored.get("seconds") else ""
        if measured and stored.get("load_average") is not None and stored.get("cpus"):
            load, cpus = stored["load_average"], stored["cpus"]
            measured += f", load average {load:.1f} on {cpus} CPUs" + (
                ": a busy machine, so its times are noisy" if load > cpus else ""
            )
        blocks = [Text(f"**Experiment.** {experiment}" + (f" ({measured}.)" if measured else ""))]
        sections.append(Section(title, [*blocks, *result.blocks, answer]))
        glance.append([str(number), question, answer.verdict, AGREES_TEXT[result.agrees]])
    if len(info.spec.analyses) > 1:
        intro = [
            Text(
                "Each answer is derived from the numbers measured in this folder; the sections below give the "
                "experiment, the measured results and the evidence. The last column says whether the "
                "measurement agrees with the chapter's answer."
            ),
            Table(
                ["#", "question", "answer, from the numbers", "chapter"], glance, align=["r", "l", "l", "l"]
            ),
        ]
        sections.insert(0, Section("Answers at a glance", intro))
    return sections


def _duration(seconds: float | None) -> str:
    from trainwell.experiments.report.answers import duration

    return duration(seconds) if seconds else "–"


__all__ = ["STUDY_JSON", "ReportContext", "analyses_sections", "textbook_line"]
