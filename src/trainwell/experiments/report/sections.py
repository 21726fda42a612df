"""The report's sections, in order. Each is a function ``(experiment_dir, variants) -> Section | None`` (None:
nothing to show, e.g. no run has an LR schedule); figures go to ``experiment_dir / "figures"``.

To add a section, write such a function and put it in :data:`SECTIONS` — one line. ``variants`` is the list of
:class:`~trainwell.experiments.report.collect.VariantRuns` (each with its colour and its runs, every run with
its folder, config, history, metrics and optional files).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwell.analysis.diagnostics.report import diagnostics_section
from trainwell.experiments.report import answers, figures
from trainwell.experiments.report.collect import ExperimentInfo, Stat, VariantRuns, read_info
from trainwell.experiments.report.document import Bullets, Figure, KeyNumbers, Section, Table, Text

# A section function returns one section, several (the analyses: one per study), or None (nothing to show).
SectionFn = Callable[[Path, list[VariantRuns]], "Section | list[Section] | None"]


def experiment_info(experiment_dir: Path) -> ExperimentInfo:
    return read_info(experiment_dir)


def _fig(experiment_dir: Path, name: str, fig: Any) -> Path:
    return figures.save(fig, experiment_dir / figures.FIGURES / f"{name}.png")


def _pm(s: Stat | None, fmt: Callable[[float], str], std_fmt: Callable[[float], str] | None = None) -> str:
    if s is None:
        return "–"
    return fmt(s.mean) + (f" ± {(std_fmt or fmt)(s.std)}" if s.n > 1 else "")


SCALING = {"unit": "pixels / 255", "standardize": "standardized inputs", "none": "raw inputs"}


def _dotted(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        out.update(_dotted(value, path) if isinstance(value, dict) else {path: value})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def _lr_text(v: VariantRuns) -> str:
    lrs = [r.learning_rate() for r in v.finished]
    if not lrs:
        return "–"
    values = sorted({f"{lr:.2g}" for lr, _ in lrs if lr is not None})
    source = lrs[0][1]
    return "/".join(values) + (f" ({source})" if source and source != "fixed" else "")


# --- sections --------------------------------------------------------------------------------------------------


def overview(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """Headline numbers and the summary figure."""
    info = experiment_info(experiment_dir)
    done = [v for v in variants if v.finished]
    blocks: list[Any] = []
    if info.quick:
        quick = ", ".join(f"{key} = {value}" for key, value in _dotted(info.spec.quick).items())
        blocks.append(
            Text(
                f"**Quick study**: the same {'variants' if variants else 'experiments'} on a slice of the data "
                f"and fewer epochs ({quick}). "
                "It checks the whole pipeline in minutes; its numbers are not the study's conclusions."
            )
        )
    if not variants:  # an experiment of [[analyses]] only: their sections say the rest
        return Section("At a glance", blocks) if blocks else None
    if not done:
        blocks.append(Text("No variant has finished yet."))
        return Section("At a glance", blocks)
    best = max(done, key=lambda v: v.stat("val_accuracy").mean)
    total = sum(r.metrics.get("train_seconds", 0.0) for v in done for r in v.finished)
    wall = info.record.get("last_invocation", {}).get("seconds")
    runs = sum(len(v.runs) for v in variants)
    finished = sum(len(v.finished) for v in variants)
    items = [
        ("best validation accuracy", _pct(best.stat("val_accuracy").mean), best.name),
        ("runs finished", f"{finished} / {runs}", f"{len(done)} of {len(variants)} variants"),
        ("training time", answers.duration(total), "all runs, training and validation"),
    ]
    if wall:
        items.append(
            ("wall clock", answers.duration(wall), "the last trainwell run: data, LR finder, MC too")
        )
    mc = next((v for v in done if v.mc_stat("mc_accuracy")), None)
    if mc is not None:
        gain = mc.mc_stat("mc_accuracy").mean - mc.stat("val_accuracy").mean
        items.append(
            ("MC dropout", answers.points(gain).replace(" points", " pts"), f"{mc.name}, validation accuracy")
        )
    blocks.append(KeyNumbers(items))
    blocks.append(
        Figure(
            _fig(experiment_dir, "summary", figures.summary_figure(variants)),
            "Validation accuracy of each variant (◆ with MC dropout, | the published reference) and its "
            "time per epoch, with the number of epochs it ran and its total training time.",
        )
    )
    return Section("At a glance", blocks)


def results(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """The results table: one row per variant."""
    if not variants:  # an experiment of [[analyses]] only
        return None
    has_mc = any(v.mc_dropout for v in variants)
    seeds = max((len(v.runs) for v in variants), default=1)
    columns = (
        ["variant", "val acc.", "test acc."]
        + (["MC acc."] if has_mc else [])
        + ["best epoch", "epochs", "s / epoch", "training", "learning rate"]
    )
    rows, swatches = [], []
    for v in variants:
        if not v.finished:
            status = (
                "not run"
                if not v.runs
                else ("failed" if any(r.status == "failed" for r in v.runs) else "unfinished")
            )
            rows.append([v.name, status] + ["–"] * (len(columns) - 2))
            swatches.append(v.color)
            continue
        row = [v.name, _pm(v.stat("val_accuracy"), _pct, _pts), _pm(v.stat("test_accuracy"), _pct, _pts)]
        if has_mc:
            row.append(_pm(v.mc_stat("mc_accuracy"), _pct, _pts) if v.mc_dropout else "–")
        row += [
            _pm(v.stat("best_epoch"), lambda x: f"{x:.0f}" if x == int(x) else f"{x:.1f}"),
            _pm(v.stat("epochs_run"), lambda x: f"{x:.0f}" if x == int(x) else f"{x:.1f}"),
            _pm(v.stat("seconds_per_epoch"), lambda x: f"{x:.2f}"),
            _pm(v.stat("train_seconds"), answers.duration),
            _lr_text(v),
        ]
        rows.append(row)
        swatches.append(v.color)
    note = (
        "Accuracies of the final model (early stopping restores the best epoch's weights where configured). "
        "Seconds per epoch include the validation pass."
    )
    if seeds > 1:
        note += f" Mean ± standard deviation over {seeds} seeds (± in percentage points)."
    if has_mc:
        note += " MC accuracy: the mean prediction of the MC-dropout samples, on the validation set."
    return Section(
        "Results",
        [
            Table(
                columns,
                rows,
                align=["l"] + ["r"] * (len(columns) - 1),
                swatches=swatches,
                id="results",
                note=note,
            )
        ],
    )


def questions(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """The study's questions, answered from the numbers."""
    by_name = {v.name: v for v in variants}
    blocks: list[Any] = []
    for v in variants:
        if v.baseline and v.baseline in by_name:
            answer = answers.compare(v, by_name[v.baseline])
            if answer is not None:
                blocks.append(answer)
        if v.mc_dropout:
            answer = answers.mc_answer(v)
            if answer is not None:
                blocks.append(answer)
    best = answers.best_answer(variants)
    if best is not None:
        blocks.append(best)
    if not blocks:
        return None
    return Section("The questions, answered from the numbers", blocks)


def reference(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """Measured numbers beside the published ones, where the experiment gives them."""
    with_ref = [v for v in variants if v.reference and v.finished]
    if not with_ref:
        return None
    info = experiment_info(experiment_dir)
    rows, swatches = [], []
    for v in with_ref:
        ref = v.reference
        acc, spe = v.stat("val_accuracy"), v.stat("seconds_per_epoch")
        ref_acc = ref.get("val_accuracy")
        mc = v.mc_stat("mc_accuracy")
        rows.append(
            [
                v.name,
                _pct(acc.mean),
                _pct(ref_acc) if ref_acc is not None else "–",
                f"{100 * (acc.mean - ref_acc):+.1f}" if ref_acc is not None else "–",
                (_pct(mc.mean) if mc else "–") + " / " + _pct(ref["mc_accuracy"])
                if "mc_accuracy" in ref
                else "–",
                f"{v.stat('best_epoch').mean:.0f} / {ref.get('best_epoch', '–')}",
                f"{spe.mean:.1f} / {ref['seconds_per_epoch']:g}"
                if "seconds_per_epoch" in ref
                else f"{spe.mean:.1f} / –",
            ]
        )
        swatches.append(v.color)
    columns = [
        "variant",
        "val accuracy",
        "published",
        "Δ points",
        "MC: ours / published",
        "best epoch: ours / pub.",
        "s / epoch: ours / pub.",
    ]
    blocks: list[Any] = [
        Table(
            columns,
            rows,
            swatches=swatches,
            id="reference",
            note=f"Published: {info.spec.reference_source}" if info.spec.reference_source else "",
        )
    ]
    if info.quick:
        blocks.append(
            Text(
                "The quick study trains on a slice of the data for a few epochs, so it is not expected to "
                "reach the published accuracies; the full study is."
            )
        )
    return Section("Against the published solution", blocks)


def learning_curves(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    shown = [v for v in variants if any(r.history for r in v.runs)]
    if not shown:
        return None
    blocks = [
        Figure(
            _fig(experiment_dir, "accuracy", figures.curves_figure(shown, "accuracy")),
            "Accuracy per epoch (left) and against wall-clock seconds (right): validation solid (● the epoch "
            "whose weights the run kept), training dashed.",
        ),
        Figure(
            _fig(experiment_dir, "loss", figures.curves_figure(shown, "loss")),
            "Loss per epoch and against wall-clock seconds. A training loss that keeps falling while the "
            "validation loss rises is overfitting; early stopping keeps the best epoch.",
        ),
    ]
    if any(len(v.finished) > 1 for v in shown):
        blocks.append(
            Text("Each seed is drawn; the first of each variant in full colour, the others lighter.")
        )
    return Section("Learning curves", blocks)


def lr_schedules(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    runs = [(v, next(r for r in v.runs if r.steps)) for v in variants if any(r.steps for r in v.runs)]
    if not runs:
        return None
    return Section(
        "Learning-rate schedules",
        [
            Figure(
                _fig(experiment_dir, "lr_schedule", figures.schedule_figure(runs)),
                "The learning rate at every optimizer step (steps.csv), and the momentum where the schedule moves it.",
            )
        ],
    )


def lr_finder(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    runs = [(v, next(r for r in v.runs if r.lr_finder)) for v in variants if any(r.lr_finder for r in v.runs)]
    runs = [(v, r) for v, r in runs if r.lr_finder.get("lrs")]
    if not runs:
        return None
    rows = [
        [
            v.name,
            f"{r.lr_finder['min_loss_lr']:.2g}",
            f"{r.lr_finder['suggested_lr']:.2g}",
            str(len(r.lr_finder["lrs"])),
        ]
        for v, r in runs
    ]
    return Section(
        "LR finder",
        [
            Figure(
                _fig(experiment_dir, "lr_finder", figures.lr_finder_figure(runs)),
                "Each sweep grows the learning rate exponentially over at most one epoch; the suggestion is the rate "
                f"of the lowest smoothed loss divided by {_divisors(runs)}.",
            ),
            Table(
                ["variant", "lowest loss at", "suggested LR", "steps"],
                rows,
                swatches=[v.color for v, _ in runs],
            ),
        ],
    )


def _divisors(runs: list[tuple[VariantRuns, Any]]) -> str:
    found = sorted({f"{r.lr_finder['min_loss_lr'] / r.lr_finder['suggested_lr']:.3g}" for _, r in runs})
    return " or ".join(found)


def mc_dropout(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    shown = [v for v in variants if v.mc_dropout and any(r.mc and "valid" in r.mc for r in v.finished)]
    if not shown:
        return None
    blocks: list[Any] = []
    for v in shown:
        blocks.append(
            Figure(
                _fig(experiment_dir, f"mc_dropout_{v.name}", figures.mc_figure(v)),
                f"{v.name}: MC dropout on the validation set, without retraining. Dropout sampled, Batch "
                "Normalization kept in inference mode.",
            )
        )
        rows = []
        for r in v.finished:
            for split in ("valid", "test"):
                m = (r.mc or {}).get(split)
                if m:
                    rows.append(
                        [
                            f"{r.folder} ({'validation' if split == 'valid' else 'test'})",
                            _pct(m["accuracy"]),
                            _pct(m["mc_accuracy"]),
                            f"{m['log_loss']:.4f}",
                            f"{m['mc_log_loss']:.4f}",
                            f"{m['mean_entropy']:.3f}",
                            f"{m['mc_mean_entropy']:.3f}",
                            f"{m['mc_seconds']:.2f}",
                        ]
                    )
        blocks.append(
            Table(
                [
                    "run (split)",
                    "accuracy",
                    "MC accuracy",
                    "log loss",
                    "MC log loss",
                    "entropy",
                    "MC entropy",
                    "MC seconds",
                ],
                rows,
                note="Entropy: the mean predictive entropy in nats; log loss: the mean negative log "
                "probability of the true class (lower is better).",
            )
        )
    return Section("MC dropout", blocks)


def _layers_summary(config: dict[str, Any]) -> str:
    layers = config.get("model", {}).get("layers", [])

    def expand(items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if item.get("type") == "repeat":
                out += expand(item.get("layers", [])) * int(item.get("count", 1))
            else:
                out.append(item)
        return out

    flat = expand(layers)
    dense = [x for x in flat if x.get("type") == "dense"]
    # an activation is a dense layer's own, or an activation layer of its own (e.g. after BN)
    acts = sorted(
        {_name(x.get("activation", "linear")) for x in dense[:-1]} - {"linear"}
        | {_name(x.get("activation", x.get("name", "?"))) for x in flat if x.get("type") == "activation"}
    )
    acts = acts or ["linear"]
    inits = sorted({_name(x.get("kernel_initializer", "glorot_uniform")) for x in dense[:-1]})
    extras = sorted({x.get("type") for x in flat if x.get("type") not in ("dense", "flatten", "activation")})
    text = f"{len(dense) - 1} hidden dense layers" if len(dense) > 1 else "no hidden dense layer"
    if dense[:-1]:
        widths = sorted({x.get("units") for x in dense[:-1]})
        text += f" of {'/'.join(map(str, widths))} units, {'/'.join(acts)}, {'/'.join(inits)}"
    if extras:
        text += "; " + ", ".join(extras)
    return text


def _name(value: Any) -> str:
    return value.get("name", "?") if isinstance(value, dict) else str(value)


def variant_details(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """What each variant is: its description, the settings that matter and where its runs are."""
    if not variants:  # an experiment of [[analyses]] only
        return None
    items = []
    for v in variants:
        run = next((r for r in v.runs if r.config), None)
        text = f"**{v.name}** — {v.description.rstrip('.')}" if v.description else f"**{v.name}**"
        if run is not None:
            c = run.config
            train, data = c.get("train", {}), c.get("data", {})
            opt = train.get("optimizer", {})
            parts = [
                _layers_summary(c),
                f"{opt.get('name')} (learning rate {_lr_text(v)})",
                f"batch {train.get('batch_size')}",
                f"at most {train.get('epochs')} epochs",
            ]
            if train.get("early_stopping"):
                parts.append(f"early stopping (patience {train['early_stopping'].get('patience')})")
            if train.get("schedule"):
                parts.append(f"schedule {train['schedule'].get('name')}")
            parts.append(SCALING.get(data.get("scaling"), f"inputs {data.get('scaling')}"))
            if data.get("limit_train"):
                parts.append(f"{data['limit_train']:,} training images")
            text += ". " + "; ".join(parts) + "."
        folders = ", ".join(f"`{r.folder}/`" for r in v.runs) or "not run"
        items.append(text + f" Runs: {folders}")
    return Section("The variants", [Bullets(items)])


def problems(experiment_dir: Path, variants: list[VariantRuns]) -> Section | None:
    """Runs that failed or did not finish, with their errors and how to continue."""
    lines = []
    for v in variants:
        for r in v.runs:
            if not r.finished:
                lines.append(f"**{r.folder}** ({r.status}): {r.error or 'no error recorded'}")
    if not lines:
        return None
    return Section(
        "Problems",
        [
            Bullets(lines),
            Text(
                "Re-running the same `trainwell run` command resumes unfinished runs from their last checkpoint and skips "
                "finished ones; the traceback of a failure is in experiment.json."
            ),
        ],
    )


def analyses(experiment_dir: Path, variants: list[VariantRuns]) -> list[Section] | None:
    """The ``[[analyses]]`` steps' sections, one answer per study (:mod:`trainwell.experiments.studies.report`)."""
    # imported at call time: the studies import this package
    from trainwell.experiments.studies.report import analyses_sections

    return analyses_sections(experiment_dir, variants)


# The sections of every report, in order. Add yours with one line (a function returning None is skipped).
SECTIONS: list[SectionFn] = [
    overview,
    analyses,  # the [[analyses]] steps' answers (trainwell.experiments.studies)
    results,
    questions,
    reference,
    learning_curves,
    lr_schedules,
    lr_finder,
    diagnostics_section,  # trainwell.analysis.diagnostics.report: probes recorded with train.diagnostics
    mc_dropout,
    variant_details,
    problems,
]
