"""The ``sparsity`` study: three ways to a sparse model, compared at several sparsities on one model.

The chapter's "sparse models": a model whose dense kernels are mostly exact zeros is smaller stored sparse
(and faster on an engine that skips zeros). The three ways, each measured on the study's base config:

- ``l1``: train with ``kernel_regularizer = { l1 = λ }`` on every dense kernel, for each strength λ, then
  zero every kernel weight with ``|w| ≤ threshold`` (:func:`~trainwell.analysis.derived.prune_run` with
  ``threshold``; the chapter: "optionally zero out the tiny weights after training");
- ``after_training``: train the dense model once, prune it by magnitude to each target sparsity and fine-tune
  ``finetune_epochs`` with the masks frozen (:func:`~trainwell.analysis.derived.prune_run`);
- ``during_training``: train with ``train.pruning`` (TF-MOT's polynomial schedule, Zhu & Gupta 2017,
  arXiv:1710.01878) to each target sparsity, the schedule rising over the ``pruning_begin`` ..
  ``pruning_end`` fraction of the training steps.

Every point's sparsity is counted from the saved ``model.pt`` of its folder (the exact zeros of the dense
kernels), and its accuracy is the test accuracy of that same model, so the three curves compare like with
like. The dense model (no l1, no pruning) is the reference.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from trainwell.analysis.pruning import L1_ZERO_THRESHOLD, Scope, sparse_state_dict, storage_bytes
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.nets import dense_indices, flat_layers
from trainwell.runs import METRICS, MODEL
from trainwell.spec import Spec
from trainwell.train.checkpoint import load_weights

if TYPE_CHECKING:  # the report package imports the studies: its modules are imported where they are used
    from trainwell.experiments.report.document import Answer, Table

Method = Literal["l1", "after_training", "during_training"]
METHODS: tuple[str, ...] = ("l1", "after_training", "during_training")
METHOD_LABELS = {
    "l1": "ℓ1 regularization",
    "after_training": "pruned after training",
    "during_training": "pruned during training",
}
DENSE = "dense"
# A model "keeps the accuracy" when its test accuracy is at most this far below the dense model's: one
# point, about two standard errors of the difference of two ~90 % accuracies on 10,000 test images
# (2 · sqrt(2 · 0.9 · 0.1 / 10,000) ≈ 0.0085).
ACCURACY_TOLERANCE = 0.01


class SparsityParams(Spec):
    """The ``params`` of a ``sparsity`` analysis."""

    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1)
    # Target sparsities of the two pruning methods: the fraction of dense kernel weights set to zero.
    sparsities: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.9, 0.95])
    # l1 strengths λ (Keras's l1: λ · Σ|w| added to the loss), one training run each.
    l1_strengths: list[float] = Field(default_factory=lambda: [1e-5, 1e-4, 1e-3])
    # Below this magnitude an l1-regularized weight is zeroed (the runs' metrics.json count at 1e-3 too).
    threshold: float = Field(default=L1_ZERO_THRESHOLD, ge=0)
    scope: Scope = "per_layer"
    finetune_epochs: int = Field(default=1, ge=0)  # after-training pruning: fine-tune with the masks frozen
    pruning_begin: float = Field(default=0.0, ge=0, lt=1)  # during training: where the schedule starts,
    pruning_end: float = Field(
        default=0.75, gt=0, le=1
    )  # and where it reaches the target (fractions of steps)
    frequency: int = Field(default=100, ge=1)  # steps between mask updates (TF-MOT's default)
    accuracy_tolerance: float = Field(default=ACCURACY_TOLERANCE, ge=0)

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, value: list[float]) -> list[float]:
        for s in value:
            if not 0 < s < 1:
                raise ValueError(f"every sparsity must be in (0, 1) (a fraction of kernel weights), got {s}")
        if len(set(value)) != len(value):
            raise ValueError(f"sparsities must differ from each other, got {value}")
        return sorted(value)

    @field_validator("l1_strengths")
    @classmethod
    def _strengths(cls, value: list[float]) -> list[float]:
        for s in value:
            if not s > 0:
                raise ValueError(f"every l1 strength must be > 0, got {s}")
        if len(set(value)) != len(value):
            raise ValueError(f"l1_strengths must differ from each other, got {value}")
        return sorted(value)

    @field_validator("pruning_end")
    @classmethod
    def _end(cls, value: float, info: Any) -> float:
        begin = info.data.get("pruning_begin", 0.0)
        if value <= begin:
            raise ValueError(f"pruning_end ({value}) must be greater than pruning_begin ({begin})")
        return value


# --- configs of the sub-runs ---------------------------------------------------------------------------------


def plain_config(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` without pruning and without l1 on any kernel: the dense reference model."""
    data = copy.deepcopy(base)
    data.get("train", {}).pop("pruning", None)
    layers = flat_layers(data["model"]["layers"])
    for i in dense_indices(layers):
        reg = layers[i].get("kernel_regularizer")
        if reg:
            reg = {k: v for k, v in reg.items() if k != "l1"}
            layers[i]["kernel_regularizer"] = reg if any(reg.values()) else None
    data["model"]["layers"] = layers
    return data


def l1_config(base: dict[str, Any], strength: float) -> dict[str, Any]:
    """The dense reference with ``kernel_regularizer.l1 = strength`` on every dense kernel (l2 kept)."""
    data = plain_config(base)
    for i in dense_indices(data["model"]["layers"]):
        layer = data["model"]["layers"][i]
        layer["kernel_regularizer"] = {**(layer.get("kernel_regularizer") or {}), "l1": strength}
    return data


def pruning_steps(total_steps: int, begin: float, end: float, frequency: int) -> dict[str, int]:
    """``begin_step``, ``end_step`` and ``frequency`` of a schedule over ``[begin, end]`` of ``total_steps``.

    ``end_step`` is moved down onto a mask update (``begin_step + k · frequency``), so the target is reached
    exactly (TF-MOT prunes only at those steps), and ``frequency`` shrinks when the range is shorter than it.
    """
    if total_steps < 2:
        raise ValueError(f"pruning during training needs at least 2 training steps, got {total_steps}")
    begin_step = min(round(begin * total_steps), total_steps - 2)
    end_step = min(max(round(end * total_steps), begin_step + 1), total_steps - 1)
    frequency = min(frequency, end_step - begin_step)
    end_step = begin_step + frequency * ((end_step - begin_step) // frequency)
    return {"begin_step": begin_step, "end_step": end_step, "frequency": frequency}


def during_config(
    base: dict[str, Any], sparsity: float, steps: dict[str, int], scope: Scope
) -> dict[str, Any]:
    """The dense reference trained with ``train.pruning`` to ``sparsity`` (polynomial schedule)."""
    data = plain_config(base)
    data["train"]["pruning"] = {"final_sparsity": sparsity, "schedule": "polynomial", "scope": scope, **steps}
    return data


def _tag(x: float) -> str:
    return f"{x:g}"


# --- what is measured in each folder ----------------------------------------------------------------------


def saved_kernel_numbers(run_dir: Path, threshold: float = 0.0) -> dict[str, Any]:
    """From a folder's saved ``model.pt``: the fraction of dense-kernel weights with ``|w| ≤ threshold``
    and the state's size as saved, dense and with the kernels stored sparse (CSR)."""
    state = load_weights(run_dir / MODEL)
    kernels = [k for k, v in state.items() if k.endswith(".linear.weight") and v.dim() == 2]
    zeros = sum(int((state[k].abs() <= threshold).sum()) for k in kernels)
    total = sum(state[k].numel() for k in kernels)
    return {
        "sparsity": zeros / total,
        "kernel_weights": total,
        "dense_bytes": storage_bytes(state),
        "sparse_bytes": storage_bytes(sparse_state_dict(state, kernels)),
    }


def _metrics(run_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((run_dir / METRICS).read_text())


def _point(ctx: StudyContext, method: str, setting: float, folder: str, **extra: Any) -> dict[str, Any]:
    run_dir = ctx.run_dir(folder)
    return {
        "method": method,
        "setting": setting,
        "folder": folder,
        "test_accuracy": _metrics(run_dir)["test_accuracy"],
        **saved_kernel_numbers(run_dir),
        **extra,
    }


def run(ctx: StudyContext) -> dict[str, Any]:
    """Train the dense model and each method's runs, prune, and measure every point."""
    from trainwell.analysis.derived import prune_run
    from trainwell.config import validate_config
    from trainwell.nn.build import build_model
    from trainwell.train.loop import steps_per_epoch

    p: SparsityParams = ctx.params
    base = ctx.base
    dense_data = plain_config(base)
    runs = [SubRun(DENSE, dense_data)]
    if "l1" in p.methods:
        runs += [SubRun(f"l1-{_tag(s)}", l1_config(base, s)) for s in p.l1_strengths]
    schedule = None
    if "during_training" in p.methods:
        config = validate_config(dense_data, source=f"analysis {ctx.analysis.name!r}")
        dataset = ctx.dataset(config)
        model = build_model(config.model, dataset.input_shape)
        total = config.train.epochs * steps_per_epoch(len(dataset.x_train), config.train.batch_size, model)
        schedule = pruning_steps(total, p.pruning_begin, p.pruning_end, p.frequency) | {"total_steps": total}
        steps = {k: schedule[k] for k in ("begin_step", "end_step", "frequency")}
        runs += [SubRun(f"during-{_tag(s)}", during_config(base, s, steps, p.scope)) for s in p.sparsities]
    results = ctx.train(runs)

    dense = results[DENSE]
    if dense.diverged:
        raise RuntimeError(f"the dense reference model diverged ({dense.error}); the study needs it")
    pts: list[dict[str, Any]] = []
    if "l1" in p.methods:
        for s in p.l1_strengths:
            name = f"l1-{_tag(s)}"
            if results[name].diverged:
                pts.append({"method": "l1", "setting": s, "folder": name, "diverged": True})
                continue
            zeroed = f"{name}-zeroed"
            ctx.derived(
                zeroed,
                lambda out, src=results[name].run_dir: prune_run(
                    src, threshold=p.threshold, out=out, progress=ctx.progress
                ),
            )
            pts.append(
                _point(
                    ctx,
                    "l1",
                    s,
                    zeroed,
                    run=name,
                    accuracy_as_trained=results[name].metrics["test_accuracy"],
                    sparsity_as_trained=saved_kernel_numbers(results[name].run_dir, p.threshold)["sparsity"],
                )
            )
    if "after_training" in p.methods:
        for s in p.sparsities:
            folder = f"after-{_tag(s)}"
            made = ctx.derived(
                folder,
                lambda out, s=s: prune_run(
                    dense.run_dir,
                    sparsity=s,
                    scope=p.scope,
                    finetune_epochs=p.finetune_epochs,
                    out=out,
                    progress=ctx.progress,
                ),
            )
            before = made.get("test_accuracy_before_finetune")
            pts.append(_point(ctx, "after_training", s, folder, accuracy_before_finetune=before))
    if "during_training" in p.methods:
        for s in p.sparsities:
            name = f"during-{_tag(s)}"
            if results[name].diverged:
                pts.append({"method": "during_training", "setting": s, "folder": name, "diverged": True})
                continue
            pts.append(_point(ctx, "during_training", s, name))
    reference = {
        "folder": DENSE,
        "test_accuracy": dense.metrics["test_accuracy"],
        "epochs_run": dense.metrics.get("epochs_run"),
        **saved_kernel_numbers(dense.run_dir),
    }
    test_examples = len(ctx.dataset().x_test)
    return {"dense": reference, "points": pts, "schedule": schedule, "test_examples": test_examples}


# --- the report -----------------------------------------------------------------------------------------------


def sparsest_within(pts: list[dict[str, Any]], dense_accuracy: float, tolerance: float) -> dict[str, Any]:
    """Per method, its sparsest measured point whose accuracy is at most ``tolerance`` below the dense
    model's (methods with no such point are left out)."""
    best: dict[str, Any] = {}
    for pt in pts:
        if pt.get("diverged") or pt["test_accuracy"] < dense_accuracy - tolerance:
            continue
        if pt["method"] not in best or pt["sparsity"] > best[pt["method"]]["sparsity"]:
            best[pt["method"]] = pt
    return best


def _setting(pt: dict[str, Any]) -> str:
    from trainwell.experiments.report.answers import pct

    return f"λ = {pt['setting']:g}" if pt["method"] == "l1" else f"target {pct(pt['setting'])}"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _span(low: float, high: float) -> str:
    """``+1.0 points to +3.0 points``, or one number when both round alike."""
    from trainwell.experiments.report.answers import points

    return points(low) if points(low) == points(high) else f"{points(low)} to {points(high)}"


def _kb(n: float) -> str:
    return f"{n / 1024:,.0f} KB"


def results_table(records: dict[str, Any]) -> Table:
    """One row per point, the dense model first; methods in the order measured."""
    from trainwell.experiments.report.answers import pct, points
    from trainwell.experiments.report.document import Table

    dense = records["dense"]
    rows = [
        [
            "dense (reference)",
            "–",
            pct(dense["sparsity"]),
            pct(dense["test_accuracy"]),
            "–",
            "–",
            _kb(dense["dense_bytes"]),
            _kb(dense["sparse_bytes"]),
        ]
    ]
    for pt in records["points"]:
        label = METHOD_LABELS[pt["method"]]
        if pt.get("diverged"):
            rows.append([label, _setting(pt), "diverged", "–", "–", "–", "–", "–"])
            continue
        if pt["method"] == "l1":
            note = f"{pct(pt['accuracy_as_trained'])} as trained"
        elif pt.get("accuracy_before_finetune") is not None:
            note = f"{pct(pt['accuracy_before_finetune'])} before fine-tuning"
        else:
            note = "–"
        rows.append(
            [
                label,
                _setting(pt),
                pct(pt["sparsity"]),
                pct(pt["test_accuracy"]),
                points(pt["test_accuracy"] - dense["test_accuracy"]),
                note,
                _kb(pt["dense_bytes"]),
                _kb(pt["sparse_bytes"]),
            ]
        )
    return Table(
        ["method", "setting", "sparsity", "test accuracy", "vs dense", "note", "size dense", "size sparse"],
        rows,
        align=["l", "l", "r", "r", "r", "l", "r", "r"],
        note="Sparsity: the share of dense-kernel weights that are exactly zero in the saved model. Size: "
        "the state dict as torch.save writes it, kernels dense, then stored sparse (CSR, 32-bit indices).",
    )


def sparsity_figure(records: dict[str, Any], methods: list[str]) -> Any:
    """Test accuracy against sparsity, one curve per method, the dense model as a dashed line."""
    from matplotlib.figure import Figure as MplFigure

    from trainwell.experiments.report import figures
    from trainwell.experiments.report.answers import pct
    from trainwell.experiments.report.collect import variant_color

    with figures.style():
        fig = MplFigure(figsize=(figures.WIDTH * 0.7, 4.2))
        ax = fig.add_subplot()
        dense = records["dense"]["test_accuracy"]
        ax.axhline(100 * dense, color=figures.MUTED, linestyle="--", linewidth=1, label=f"dense {pct(dense)}")
        for index, method in enumerate(methods):
            pts = sorted(
                (p for p in records["points"] if p["method"] == method and not p.get("diverged")),
                key=lambda p: p["sparsity"],
            )
            if not pts:
                continue
            ax.plot(
                [100 * p["sparsity"] for p in pts],
                [100 * p["test_accuracy"] for p in pts],
                marker="o",
                color=variant_color(index),
                label=METHOD_LABELS[method],
            )
        ax.set_xlabel("sparsity (% of dense-kernel weights exactly zero)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy against sparsity")
        ax.legend(loc="lower left")
    return fig


def _answer(records: dict[str, Any], p: SparsityParams) -> tuple[Answer, bool | None]:
    from trainwell.experiments.report.answers import pct, points
    from trainwell.experiments.report.document import Answer

    dense = records["dense"]["test_accuracy"]
    pts = [pt for pt in records["points"] if not pt.get("diverged")]
    tol = p.accuracy_tolerance
    best = sparsest_within(pts, dense, tol)
    evidence = []
    for method in p.methods:
        mine = sorted((pt for pt in pts if pt["method"] == method), key=lambda pt: pt["sparsity"])
        if not mine:
            evidence.append(f"{METHOD_LABELS[method]}: no finished point.")
            continue
        top = mine[-1]
        kept = best.get(method)
        kept_text = (
            f"its sparsest model within {points(tol).lstrip('+')} of the dense one is "
            f"{pct(kept['sparsity'])} sparse ({_setting(kept)}, {pct(kept['test_accuracy'])})"
            if kept
            else f"no model of it stays within {points(tol).lstrip('+')} of the dense one"
        )
        evidence.append(
            f"{METHOD_LABELS[method]}: sparsity {pct(mine[0]['sparsity'])} to {pct(top['sparsity'])}; at "
            f"{pct(top['sparsity'])} the test accuracy is {pct(top['test_accuracy'])} "
            f"({points(top['test_accuracy'] - dense)} vs dense); {kept_text}."
        )
    after = {pt["setting"]: pt for pt in pts if pt["method"] == "after_training"}
    during = {pt["setting"]: pt for pt in pts if pt["method"] == "during_training"}
    common = sorted(set(after) & set(during))
    if common:
        n = records.get("test_examples") or 0
        diffs = []
        for s in common:
            d = during[s]["test_accuracy"] - after[s]["test_accuracy"]
            acc = (during[s]["test_accuracy"] + after[s]["test_accuracy"]) / 2
            # Two standard errors of the difference of two accuracies on n test images.
            if not n:  # records without the test-set size: no noise to hold the difference against
                diffs.append(f"{pct(s)}: {points(d)}")
                continue
            noise = 2 * math.sqrt(2 * acc * (1 - acc) / n)
            size = "beyond" if abs(d) > noise else "within"
            diffs.append(f"{pct(s)}: {points(d)} ({size} the ±{points(noise).lstrip('+')} noise)")
        evidence.append(
            "Pruning during training minus pruning after training, at each target: " + "; ".join(diffs) + "."
        )
    tuned = [pt for pt in pts if pt.get("accuracy_before_finetune") is not None]
    if tuned:
        gains = [pt["test_accuracy"] - pt["accuracy_before_finetune"] for pt in tuned]
        evidence.append(
            f"The {p.finetune_epochs}-epoch fine-tune after pruning changed the accuracy by "
            f"{_span(min(gains), max(gains))}."
        )
        n = records.get("test_examples") or 0
        noise = 2 * math.sqrt(2 * dense * (1 - dense) / n) if n else math.inf
        better = [pt for pt in tuned if pt["test_accuracy"] - dense > noise]
        if better:  # the fine-tune is training the dense model never had
            epochs = records["dense"].get("epochs_run")
            more = (
                _epochs(p.finetune_epochs)
                + " more than the dense model"
                + (f" ({_epochs(epochs)})" if epochs else "")
            )
            evidence.append(
                f"{len(better)} model(s) pruned after training beat the dense model by more than the "
                f"±{points(noise).lstrip('+')} noise (up to "
                f"{points(max(pt['test_accuracy'] for pt in better) - dense)}): the fine-tune trained them {more}."
            )
    l1 = [pt for pt in pts if pt["method"] == "l1"]
    if l1:
        costs = [pt["test_accuracy"] - pt["accuracy_as_trained"] for pt in l1]
        evidence.append(
            f"Zeroing the ℓ1 models' weights with |w| ≤ {p.threshold:g} changed their accuracy by "
            f"{_span(min(costs), max(costs))}."
        )
    question = "Which way to a sparse model keeps the most accuracy at a given sparsity?"
    if not best:
        verdict, tone = (
            f"none keeps the accuracy within {points(tol).lstrip('+')} at any measured sparsity",
            "bad",
        )
    else:
        # The sparsest; at equal sparsity (the same target), the more accurate one.
        winner = max(best.values(), key=lambda pt: (pt["sparsity"], pt["test_accuracy"]))
        verdict = (
            f"{METHOD_LABELS[winner['method']]}: {pct(winner['sparsity'])} sparse within "
            f"{points(tol).lstrip('+')} of the dense model ({pct(winner['test_accuracy'])})"
        )
        tied = [pt for pt in best.values() if pt is not winner and pt["sparsity"] == winner["sparsity"]]
        if tied:
            verdict += "; " + ", ".join(
                f"{METHOD_LABELS[pt['method']]} too ({pct(pt['test_accuracy'])})" for pt in tied
            )
        tone = "good"
    # The ways themselves, each with the sparsest model it produced (the question asks for the ways first).
    reached = {}
    for pt in pts:
        reached[pt["method"]] = max(reached.get(pt["method"], 0.0), pt["sparsity"])
    ways = [f"{METHOD_LABELS[m]} (up to {pct(s)} sparse)" for m, s in reached.items() if s > 0]
    if ways:
        verdict = f"{len(ways)} way{'s' if len(ways) > 1 else ''}, each measured: {', '.join(ways)}. Most accurate when sparse: {verdict}"
    # The chapter: l1 gives a sparse model; TF-MOT pruning an even sparser one.
    pruned = [best[m]["sparsity"] for m in ("after_training", "during_training") if m in best]
    compared = "l1" in p.methods and bool({"after_training", "during_training"} & set(p.methods))
    if not compared or (not pruned and "l1" not in best):
        agrees = None  # nothing to hold against the claim
    else:
        agrees = max(pruned, default=0.0) > (best["l1"]["sparsity"] if "l1" in best else 0.0)
    return Answer(question=question, verdict=verdict, evidence=evidence, tone=tone), agrees


def report(rctx: Any) -> StudyReport:
    from trainwell.experiments.report.answers import pct
    from trainwell.experiments.report.document import Block, Figure, Text

    records, p = rctx.records, rctx.params
    dense = records["dense"]
    methods = ", ".join(METHOD_LABELS[m] for m in p.methods)
    schedule = records.get("schedule")
    parts = [
        f"The dense model ({pct(dense['test_accuracy'])} test accuracy) made sparse three ways: {methods}."
    ]
    if "l1" in p.methods:
        parts.append(
            f"ℓ1 strengths {', '.join(f'{s:g}' for s in p.l1_strengths)}, weights with "
            f"|w| ≤ {p.threshold:g} then zeroed."
        )
    if "after_training" in p.methods:
        parts.append(
            f"Pruning after training: magnitude, {p.scope.replace('_', '-')}, then "
            f"{_epochs(p.finetune_epochs)} of fine-tuning with the masks frozen."
        )
    if schedule:
        parts.append(
            f"Pruning during training: polynomial schedule from step {schedule['begin_step']} to "
            f"{schedule['end_step']} of {schedule['total_steps']}, masks updated every "
            f"{schedule['frequency']} steps."
        )
    if {"after_training", "during_training"} & set(p.methods):
        parts.append(f"Target sparsities: {', '.join(pct(s) for s in p.sparsities)}.")
    fig = rctx.figure("accuracy-vs-sparsity", sparsity_figure(records, list(p.methods)))
    answer, agrees = _answer(records, p)
    blocks: list[Block] = [
        results_table(records),
        Figure(fig, "Test accuracy against the measured sparsity, one curve per method."),
    ]
    diverged = [pt for pt in records["points"] if pt.get("diverged")]
    if diverged:
        blocks.append(Text(f"{len(diverged)} run(s) diverged and are left out of the figure."))
    return StudyReport(experiment=" ".join(parts), blocks=blocks, answer=answer, agrees=agrees)


SPARSITY = Study(
    kind="sparsity",
    title="Sparse models: ℓ1, pruning after training, pruning during training",
    question="Which way to a sparse model keeps the most accuracy at a given sparsity?",
    textbook="ℓ1 regularization gives a sparse model (zero the tiny weights after training); pruning "
    "(TF-MOT) gives an even sparser one",
    params=SparsityParams,
    run=run,
    report=report,
)
