"""The chapter's question 7, measured: does dropout slow down training, inference, and MC dropout?
(``dropout_cost``)

- training: the base net with and without dropout (rate ``rate`` before every dense layer but the first,
  i.e. on every hidden layer's output), trained alike; the epochs and wall-clock seconds each takes to first
  reach a validation accuracy (``target``, default the lower of the two runs' best, which both reach), and
  the time per epoch;
- inference: the two trained models' latency in inference mode (dropout off) at each batch size, timed
  interleaved by :func:`trainwell.analysis.latency.compare_latency`;
- MC dropout: the wall time of :func:`trainwell.analysis.mc_dropout.predict_mc` on ``mc_examples``
  validation images for each number of samples, against the ordinary prediction of the same images, with
  the least-squares line ``time = a + b · samples``.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

from trainwell.analysis.latency import compare_latency
from trainwell.analysis.mc_dropout import predict, predict_mc
from trainwell.experiments.report.document import Figure, Table
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.measure import convergence, fmt, overall, pct, with_layers
from trainwell.experiments.studies.nets import dense_indices, flat_layers
from trainwell.runs import load_run_model, read_history
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.experiments.studies.report import ReportContext

# Inference times within 10 % of each other are "the same": latency on an idle shared CPU varies that much.
SAME_TIME = 0.10
DROPOUT, PLAIN = "dropout", "no-dropout"
# MC dropout's time "grows linearly" with the samples when a line explains this much of its variance.
LINEAR_R2 = 0.95


class DropoutCostParams(Spec):
    """``dropout_cost``'s params."""

    rate: float = Field(default=0.2, gt=0, lt=1)
    target: float | None = Field(default=None, gt=0, le=1)  # validation accuracy to reach (default: derived)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 1000], min_length=1)
    latency_runs: int = Field(default=50, ge=1)
    mc_samples: list[int] = Field(default_factory=lambda: [1, 10, 30, 100], min_length=2)
    mc_examples: int = Field(default=1000, ge=1)
    timing_repeats: int = Field(default=3, ge=1)  # the median of this many timings of each prediction


def with_dropout(layers: list[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    """``layers`` unrolled, with a dropout layer of ``rate`` before every dense layer but the first."""
    flat = flat_layers(layers)
    first = dense_indices(flat)[0]
    out: list[dict[str, Any]] = []
    for i, layer in enumerate(flat):
        if layer.get("type") == "dense" and i != first:
            out.append({"type": "dropout", "rate": rate})
        out.append(layer)
    return out


def same_time(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two latencies (``median_ms``, ``p10_ms``, ``p90_ms``) cannot be told apart: their medians are
    within ``SAME_TIME`` of each other, or each median lies inside the other's 10th–90th percentile range (the
    spread measured in this run, larger than 10 % on a busy machine)."""
    if abs(a["median_ms"] / b["median_ms"] - 1) <= SAME_TIME:
        return True
    return b["p10_ms"] <= a["median_ms"] <= b["p90_ms"] and a["p10_ms"] <= b["median_ms"] <= a["p90_ms"]


def r_squared(xs: list[float], ys: list[float], a: float, b: float) -> float:
    """The share of the variance of ``ys`` the line ``a + b·x`` explains: ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²``."""
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    residual = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1.0 - residual / total if total > 0 else 1.0


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares ``y = a + b · x``: ``(a, b)``."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def _median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dropout_cost_run(ctx: StudyContext) -> dict[str, Any]:
    p: DropoutCostParams = ctx.params
    layers = ctx.base["model"]["layers"]
    runs = [
        SubRun(PLAIN, with_layers(ctx.base, flat_layers(layers)), "no dropout"),
        SubRun(DROPOUT, with_layers(ctx.base, with_dropout(layers, p.rate)), f"dropout {p.rate:g}"),
    ]
    results = ctx.train(runs)
    if any(not results[r.name].metrics for r in runs):
        return {"status": {r.name: results[r.name].status for r in runs}}
    dataset = ctx.dataset()
    models = {r.name: load_run_model(results[r.name].run_dir) for r in runs}
    out: dict[str, Any] = {
        "history": {r.name: read_history(results[r.name].run_dir) for r in runs},
        "val_accuracy": {r.name: results[r.name].metrics["val_accuracy"] for r in runs},
        "seconds_per_epoch": {r.name: results[r.name].metrics["seconds_per_epoch"] for r in runs},
        "threads": torch.get_num_threads(),
        "latency": [],
    }
    for batch in p.batch_sizes:
        lat = compare_latency(models, dataset.input_shape, batch, runs=p.latency_runs)
        out["latency"].append({name: lat[name].as_dict() for name in models})
    x = dataset.x_valid[: p.mc_examples]
    model = models[DROPOUT]
    out["mc_examples"] = len(x)
    out["predict_seconds"] = _median_seconds(lambda: predict(model, x), p.timing_repeats)
    out["mc_seconds"] = [
        {
            "samples": k,
            "seconds": _median_seconds(lambda k=k: predict_mc(model, x, k, seed=0), p.timing_repeats),
        }
        for k in p.mc_samples
    ]
    return out


def dropout_verdict(records: dict[str, Any], target: float | None) -> tuple[str, list[str], bool | None]:
    if "history" not in records:
        return f"not settled: a sub-run did not finish ({records.get('status')})", [], None
    h = records["history"]
    goal, (e_plain, e_drop), (s_plain, s_drop) = convergence(h[PLAIN], h[DROPOUT], target)
    per_epoch = records["seconds_per_epoch"][DROPOUT] / records["seconds_per_epoch"][PLAIN]
    # slower: more epochs, or as many epochs but more than SAME_TIME more seconds, to reach the goal
    if e_drop is None or (e_plain is not None and e_drop > e_plain):
        slower_training: bool | None = True
    elif e_drop == e_plain and s_drop is not None and s_plain:
        slower_training = True if s_drop > s_plain * (1 + SAME_TIME) else None
    else:
        slower_training = False
    evidence = [
        f"Training: to reach {pct(goal)} validation accuracy, no dropout took {e_plain} epoch(s) "
        f"({fmt(s_plain)} s), dropout {e_drop if e_drop is not None else 'never (not within the epochs run)'}"
        + (f" ({fmt(s_drop)} s)" if s_drop is not None else "")
        + f"; an epoch with dropout takes ×{per_epoch:.2f} the time. Final validation accuracy: no dropout "
        f"{pct(records['val_accuracy'][PLAIN])}, dropout {pct(records['val_accuracy'][DROPOUT])}."
    ]
    ratios, differs = [], []
    for row in records["latency"]:
        d, q = row[DROPOUT], row[PLAIN]
        ratio = d["median_ms"] / q["median_ms"]
        ratios.append(ratio)
        differs.append(same_time(d, q) is False)
        evidence.append(
            f"Inference at batch size {q['batch_size']}: {fmt(d['median_ms'])} ms with the dropout model "
            f"({fmt(d['p10_ms'])}–{fmt(d['p90_ms'])}), {fmt(q['median_ms'])} ms without ({fmt(q['p10_ms'])}–"
            f"{fmt(q['p90_ms'])}): ×{ratio:.2f}, {'a difference' if differs[-1] else 'no difference'} beyond the "
            f"noise (medians and 10th–90th percentiles of {q['runs']} runs on {records['threads']} thread(s))."
        )
    same_inference = not any(differs)
    mc = records["mc_seconds"]
    base = records["predict_seconds"]
    xs, ys = [m["samples"] for m in mc], [m["seconds"] for m in mc]
    a, b = linear_fit(xs, ys)
    fit = r_squared(xs, ys, a, b)
    evidence.append(
        f"MC dropout on {records['mc_examples']:,} images: "
        + ", ".join(f"{m['samples']} samples {fmt(m['seconds'])} s (×{m['seconds'] / base:.1f})" for m in mc)
        + f", against {fmt(base)} s for the ordinary prediction; the time grows by {1e3 * b:.2f} ms per sample "
        f"(least squares, intercept {1e3 * a:.1f} ms, R² = {fit:.3f})."
    )
    growth = (
        "growing linearly with the number of samples"
        if fit >= LINEAR_R2
        else f"growing with the number of samples, though not cleanly linearly (R² = {fit:.2f}: noisy timings)"
    )
    largest = mc[-1]
    mc_slower = largest["seconds"] > base * (1 + SAME_TIME)
    verdict = (
        {True: "Training: yes, ", None: "Training: about the same, ", False: "Training: not here, "}[
            slower_training
        ]
        + (
            f"dropout reached {pct(goal)} after {e_drop} epochs against {e_plain}"
            if e_drop is not None
            else f"dropout never reached {pct(goal)}"
        )
        + "; inference: "
        + (
            "no measurable cost"
            if same_inference
            else "; ".join(
                f"×{r:.2f} at batch size {row[PLAIN]['batch_size']} "
                f"({1e3 * (row[DROPOUT]['median_ms'] - row[PLAIN]['median_ms']):+.0f} µs per pass)"
                if dif
                else f"no measurable cost at batch size {row[PLAIN]['batch_size']}"
                for r, dif, row in zip(ratios, differs, records["latency"], strict=True)
            )
        )
        + f"; MC dropout: ×{largest['seconds'] / base:.0f} the ordinary prediction's time with {largest['samples']} samples, "
        + growth
    )
    if not same_inference:
        evidence.append(
            "The two models differ only by the dropout modules, identities in inference mode that are still "
            "called once per layer: a fixed cost per forward pass, visible where a pass is short."
        )
    return verdict, evidence, overall([slower_training, same_inference, mc_slower])


def _mc_figure(records: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure as MplFigure

    from trainwell.experiments.report import figures

    with figures.style():
        fig = MplFigure(figsize=(figures.WIDTH / 2, 3.4), layout="constrained")
        ax = fig.subplots()
        mc = records["mc_seconds"]
        xs, ys = [m["samples"] for m in mc], [m["seconds"] for m in mc]
        ax.plot(xs, ys, "o-", label="MC dropout")
        ax.axhline(records["predict_seconds"], linestyle="--", color="gray", label="ordinary prediction")
        ax.set(xlabel="MC samples", ylabel="seconds", xscale="log", yscale="log")
        ax.legend()
    return fig


def dropout_cost_report(rctx: ReportContext) -> StudyReport:
    from trainwell.experiments.report import figures

    p: DropoutCostParams = rctx.params
    records = rctx.records
    experiment = (
        f"The base net trained alike with and without dropout (rate {p.rate:g} on every hidden layer's output); "
        f"then both trained models timed in inference mode at batch sizes {', '.join(map(str, p.batch_sizes))}, "
        f"and MC dropout timed on {p.mc_examples:,} validation images with {', '.join(map(str, p.mc_samples))} "
        "samples."
    )
    blocks: list[Any] = []
    if "history" in records:
        rows = [
            [
                label,
                pct(records["val_accuracy"][name]),
                fmt(records["seconds_per_epoch"][name]),
                *[fmt(row[name]["median_ms"]) for row in records["latency"]],
            ]
            for name, label in ((PLAIN, "no dropout"), (DROPOUT, f"dropout {p.rate:g}"))
        ]
        columns = ["model", "val accuracy", "s / epoch", *[f"ms, batch {b}" for b in p.batch_sizes]]
        blocks.append(Table(columns, rows))
        groups = [rctx.group("no dropout", [PLAIN], 0), rctx.group(f"dropout {p.rate:g}", [DROPOUT], 1)]
        if all(g.finished for g in groups):
            blocks.append(
                Figure(
                    rctx.figure("curves", figures.curves_figure(groups, "accuracy")),
                    "Accuracy per epoch and per second",
                )
            )
        blocks.append(
            Figure(rctx.figure("mc", _mc_figure(records)), "MC dropout's time against its number of samples")
        )
    return StudyReport.answered(rctx.study.question, experiment, blocks, dropout_verdict(records, p.target))


DROPOUT_COST = Study(
    kind="dropout_cost",
    title="What dropout costs",
    question="Does dropout slow down training? Does it slow down inference (i.e., making predictions on new instances)? What about MC Dropout?",
    textbook=(
        "Dropout slows down convergence (roughly by a factor of two) but not inference, since it is off then; "
        "MC dropout is active at inference, and with 10 or more samples it makes predictions 10 or more times slower"
    ),
    params=DropoutCostParams,
    run=dropout_cost_run,
    report=dropout_cost_report,
)
