"""The report's figures, drawn with matplotlib (no pyplot state: each figure is its own object) and written as
PNG. Every variant has one colour throughout (its place in the experiment file); validation is drawn solid,
training dashed; where a number is shown, it is written on the figure too.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from trainwell.experiments.report.answers import duration
from trainwell.experiments.report.collect import RunRecord, VariantRuns
from trainwell.io import write_bytes

FIGURES = "figures"
MC_MIN_HALF_SPAN = 0.015
# 10 inches at 144 dpi is 1440 px: sharp on a high-density screen at the report's ~1000 px column.
WIDTH, DPI = 10.0, 144
INK, MUTED, GRID = "#1d2330", "#5b6474", "#e6e8ed"
STYLE = {
    "font.size": 10.5,
    "font.family": "DejaVu Sans",
    "axes.edgecolor": "#b9bfca",
    "axes.labelcolor": INK,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


@contextmanager
def style() -> Iterator[None]:
    with mpl.rc_context(STYLE):
        yield


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG to ``path``, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, buffer.getvalue())
    return path


def _percent(ax: Any, decimals: int = 0) -> None:
    """Percent labels on round ticks (multiples of 1, 2, 5 or 10 points, or tenths with ``decimals = 1``)."""
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10] if decimals else [1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=decimals))


def _robust_limits(
    values: list[float], pad: float = 0.06, quantile: float = 0.98
) -> tuple[float, float] | None:
    """Limits that show the bulk of the curves: a diverging epoch must not flatten every other line."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    low, high = finite[0], finite[min(len(finite) - 1, int(quantile * len(finite)))]
    span = (high - low) or abs(high) or 1.0
    return low - pad * span, high + pad * span


def curves_figure(variants: list[VariantRuns], metric: str) -> Figure:
    """``metric`` ("loss" or "accuracy") of every variant against the epoch (left) and against wall-clock
    seconds (right): validation solid with its best epoch marked, training dashed."""
    with style():
        fig = Figure(figsize=(WIDTH, 4.1), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        values: list[float] = []
        for v in variants:
            for k, run in enumerate(v.finished or [r for r in v.runs if r.history]):
                epochs = run.column("epoch")
                seconds = run.elapsed()
                label = v.name if k == 0 else None
                alpha = 1.0 if k == 0 else 0.55
                for ax, xs in zip(axes, (epochs, seconds), strict=True):
                    val = run.column(f"val_{metric}")
                    ax.plot(
                        xs,
                        run.column(metric),
                        color=v.color,
                        linestyle=(0, (4, 3)),
                        linewidth=1.2,
                        alpha=0.55 * alpha,
                    )
                    if any(math.isfinite(x) for x in val):
                        ax.plot(xs, val, color=v.color, linewidth=2.0, alpha=alpha, label=label)
                        best = _kept_index(run, val, metric)
                        if best is not None:
                            ax.plot(
                                [xs[best]],
                                [val[best]],
                                marker="o",
                                markersize=6,
                                color=v.color,
                                markeredgecolor="white",
                                markeredgewidth=1.2,
                                alpha=alpha,
                                zorder=5,
                            )
                values += run.column(metric) + run.column(f"val_{metric}")
        # A loss can explode for an epoch; an accuracy cannot leave [0, 1], so it is shown whole.
        limits = _robust_limits(values) if metric == "loss" else _robust_limits(values, quantile=1.0)
        if limits:
            axes[0].set_ylim(*limits)
        name = {"loss": "Loss", "accuracy": "Accuracy"}.get(metric, metric)
        axes[0].set_title(f"{name} by epoch")
        axes[1].set_title(f"{name} by wall-clock time")
        axes[0].set_xlabel("epoch")
        axes[1].set_xlabel("seconds of training (incl. validation)")
        axes[0].set_ylabel(name.lower())
        if metric == "accuracy":
            _percent(axes[0])
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        handles += [
            Line2D([], [], color=MUTED, linewidth=2.0),
            Line2D([], [], color=MUTED, linestyle=(0, (4, 3))),
        ]
        labels += ["validation (● the epoch kept)", "training"]
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7), fontsize=9.5)
    return fig


def _kept_index(run: RunRecord, values: list[float], metric: str) -> int | None:
    """The epoch whose model the run kept (metrics.json's best_epoch), else the best value's."""
    best_epoch = (run.metrics or {}).get("best_epoch")
    if isinstance(best_epoch, int) and 1 <= best_epoch <= len(values):
        return best_epoch - 1
    finite = [(x, i) for i, x in enumerate(values) if math.isfinite(x)]
    if not finite:
        return None
    return (min(finite) if metric == "loss" else max(finite))[1]


def summary_figure(variants: list[VariantRuns]) -> Figure:
    """At a glance: validation accuracy per variant (± std over seeds, MC dropout and published reference
    marked) and the time it took (seconds per epoch, with the total)."""
    shown = [v for v in variants if v.finished]
    with style():
        height = 0.9 + 0.52 * len(shown)
        fig = Figure(figsize=(WIDTH, height), layout="constrained")
        ax_acc, ax_time = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
        ys = list(range(len(shown)))[::-1]
        top = 0.0
        extra: list[tuple[Any, str]] = []
        for y, v in zip(ys, shown, strict=True):
            acc = v.stat("val_accuracy")
            ax_acc.barh(
                y,
                acc.mean,
                height=0.62,
                color=v.color,
                alpha=0.9,
                xerr=acc.std if acc.n > 1 else None,
                error_kw={"ecolor": INK, "capsize": 3, "lw": 1},
            )
            ax_acc.text(
                acc.mean / 2,
                y,
                f"{100 * acc.mean:.1f} %",
                va="center",
                ha="center",
                color="white",
                fontsize=9.5,
                fontweight="bold",
            )
            top = max(top, acc.mean + acc.std)
            mc = v.mc_stat("mc_accuracy")
            ref = (v.reference or {}).get("val_accuracy")
            if mc is not None:
                h = ax_acc.plot(
                    mc.mean,
                    y,
                    marker="D",
                    markersize=7,
                    color="white",
                    markeredgecolor=INK,
                    markeredgewidth=1.4,
                    linestyle="none",
                    zorder=5,
                )[0]
                # the label goes right of everything drawn on this row, so it never sits on a marker
                right = max(mc.mean, acc.mean + acc.std, ref if ref is not None else 0.0)
                ax_acc.text(
                    right + 0.012, y, f"MC {100 * mc.mean:.1f} %", fontsize=8.5, color=INK, va="center"
                )
                extra.append((h, "MC dropout"))
                top = max(top, right + 0.08)
            if ref is not None:
                h = ax_acc.plot([ref, ref], [y - 0.38, y + 0.38], color=INK, linewidth=2.2, zorder=4)[0]
                extra.append((h, "published reference"))
                top = max(top, ref)
            spe, total = v.stat("seconds_per_epoch"), v.stat("train_seconds")
            epochs = v.stat("epochs_run")
            ax_time.barh(y, spe.mean, height=0.62, color=v.color, alpha=0.9)
            ax_time.text(
                spe.mean,
                y,
                f"  {spe.mean:.1f} s × {epochs.mean:.0f} ep = {duration(total.mean)}",
                va="center",
                ha="left",
                fontsize=9,
                color=INK,
            )
        for ax in (ax_acc, ax_time):
            ax.set_yticks(ys, [v.name for v in shown])
            ax.grid(axis="y", visible=False)
            ax.tick_params(axis="y", length=0, labelsize=10.5, labelcolor=INK)
        ax_time.tick_params(axis="y", labelleft=False)
        ax_acc.set_xlim(0, min(1.0, top * 1.12 + 0.02))
        ax_acc.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax_acc.set_title("Validation accuracy")
        ax_time.set_title("Seconds per epoch")
        xmax = max((v.stat("seconds_per_epoch").mean for v in shown), default=1.0)
        ax_time.set_xlim(0, xmax * 1.9)  # room for the "× epochs = total" labels
        seen: dict[str, Any] = {}
        for handle, label in extra:
            seen.setdefault(label, handle)
        if seen:
            fig.legend(list(seen.values()), list(seen), loc="outside lower left", ncol=len(seen), fontsize=9)
    return fig


def schedule_figure(runs: list[tuple[VariantRuns, RunRecord]]) -> Figure:
    """The learning rate (and the momentum, where it moves) at every optimizer step, from ``steps.csv``."""
    has_momentum = any(_moves(r.steps, "momentum") for _, r in runs)
    with style():
        fig = Figure(figsize=(WIDTH, 3.6), layout="constrained")
        axes = fig.subplots(1, 2 if has_momentum else 1, squeeze=False)[0]
        for v, r in runs:
            steps = [row["step"] for row in r.steps]
            axes[0].plot(steps, [row["lr"] for row in r.steps], color=v.color, linewidth=2, label=v.name)
            if has_momentum:
                axes[1].plot(
                    steps, [row.get("momentum", math.nan) for row in r.steps], color=v.color, linewidth=2
                )
        axes[0].set_title("Learning rate by step")
        axes[0].set_xlabel("optimizer step")
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
        if has_momentum:
            axes[1].set_title("Momentum (β₁ for Adam-type) by step")
            axes[1].set_xlabel("optimizer step")
        fig.legend(loc="outside lower center", ncol=min(len(runs), 6), fontsize=9.5)
    return fig


def _moves(rows: list[dict[str, float]] | None, key: str) -> bool:
    values = {row.get(key) for row in rows or [] if row.get(key) is not None and math.isfinite(row.get(key))}
    return len(values) > 1


def lr_finder_figure(runs: list[tuple[VariantRuns, RunRecord]]) -> Figure:
    """Each LR finder sweep: smoothed loss against the learning rate (log axis), its suggestion marked."""
    with style():
        fig = Figure(figsize=(WIDTH, 3.9), layout="constrained")
        ax = fig.subplots()
        values: list[float] = []
        for v, r in runs:
            found = r.lr_finder
            lrs, losses = found["lrs"], found["losses"]
            ax.plot(
                lrs,
                losses,
                color=v.color,
                linewidth=2,
                label=f"{v.name}: suggests {found['suggested_lr']:.2g}",
            )
            lr = found["suggested_lr"]
            at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(lr)))
            ax.plot(
                [lr],
                [losses[at]],
                marker="o",
                markersize=7,
                color=v.color,
                markeredgecolor="white",
                markeredgewidth=1.3,
                zorder=5,
            )
            values += losses
        finite = [x for x in values if math.isfinite(x)]
        if finite:  # from the lowest loss to a bit above the starting level: the exploded tail is cut off
            starts = [r.lr_finder["losses"][0] for _, r in runs if r.lr_finder["losses"]]
            low, high = min(finite), max(s for s in starts if math.isfinite(s))
            ax.set_ylim(low - 0.08 * (high - low + 1e-9), high + 0.35 * (high - low + 1e-9))
        ax.set_xscale("log")
        ax.set_title("LR finder: smoothed training loss as the learning rate grows")
        ax.set_xlabel("learning rate (log scale); ● the suggested rate")
        ax.set_ylabel("loss")
        fig.legend(loc="outside right upper", fontsize=9)
    return fig


def mc_figure(v: VariantRuns) -> Figure:
    """MC dropout on the validation set: the accuracy of the mean prediction as samples are added, against the
    ordinary prediction; and the predictive entropy of right and wrong predictions."""
    run = next(r for r in v.finished if r.mc and "valid" in r.mc)
    valid = run.mc["valid"]
    hist = valid.get("entropy_histogram")
    with style():
        fig = Figure(figsize=(WIDTH, 3.7), layout="constrained")
        axes = fig.subplots(1, 2 if hist else 1, squeeze=False)[0]
        curve = valid.get("accuracy_by_samples") or []
        ax = axes[0]
        if curve:
            ax.plot(
                [c["samples"] for c in curve],
                [c["accuracy"] for c in curve],
                color=v.color,
                linewidth=2.2,
                marker="o",
                markersize=4,
                label="MC dropout: mean of the first k samples",
            )
        ax.axhline(
            valid["accuracy"],
            color=MUTED,
            linestyle=(0, (4, 3)),
            linewidth=1.5,
            label=f"ordinary prediction ({100 * valid['accuracy']:.1f} %)",
        )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_title("Validation accuracy vs. number of MC samples")
        ax.set_xlabel("samples (log scale)")
        # At least ±1.5 points around the ordinary accuracy: a few images' worth must not look like a trend.
        shown = [c["accuracy"] for c in curve] + [valid["accuracy"]]
        low = min(*shown, valid["accuracy"] - MC_MIN_HALF_SPAN)
        high = max(*shown, valid["accuracy"] + MC_MIN_HALF_SPAN)
        ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
        _percent(ax, decimals=1)
        ax.legend(loc="lower right", fontsize=9)
        if hist:
            edges = hist["edges"]
            width = edges[1] - edges[0]
            centers = [e + width / 2 for e in edges[:-1]]
            axes[1].bar(
                centers, hist["correct"], width=width * 0.92, color=v.color, alpha=0.85, label="right"
            )
            axes[1].bar(
                centers,
                hist["wrong"],
                width=width * 0.92,
                bottom=hist["correct"],
                color="#b9bfca",
                label="wrong",
            )
            axes[1].set_title("Predictive entropy of the MC prediction")
            axes[1].set_xlabel("entropy (nats); 0 = certain, right end = uniform")
            axes[1].set_ylabel("validation images")
            axes[1].legend(loc="upper right", fontsize=9)
    return fig
