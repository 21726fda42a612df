"""The chapter's question 5, measured: SGD with momentum too close to 1 (``momentum_too_high``).

The base net trained with SGD at each momentum of ``momenta`` (default 0.9 and 0.99999), the same learning
rate, probed every ``probe_every`` steps: the loss on the fixed probe batch and the norm of all the kernels
(``‖θ‖ = sqrt(Σ ‖W_l‖²)``) trace what the momentum does between epochs. A run whose loss becomes NaN is a
result ("diverged"), drawn up to where it stopped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from trainwell.analysis.diagnostics.recorder import RECORDS_FILE, read_records
from trainwell.experiments.report.document import Figure, Table
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.measure import fmt, kernel_norm, pct, probes
from trainwell.runs import read_history
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.experiments.studies.report import ReportContext


class MomentumParams(Spec):
    """``momentum_too_high``'s params: the momenta (the first is the reference), the learning rate (default:
    the base optimizer's) and the probe interval in steps."""

    momenta: list[float] = Field(default_factory=lambda: [0.9, 0.99999], min_length=2)
    learning_rate: float | None = Field(default=None, gt=0)
    probe_every: int = Field(default=25, ge=1)

    @field_validator("momenta")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        for m in value:
            if not 0 <= m < 1:
                raise ValueError(f"every momentum must be in [0, 1), got {m}")
        return value


def momentum_name(m: float) -> str:
    return f"momentum-{m:g}"


def sign_changes(values: list[float]) -> int:
    """How many times the trace turns: a rise followed by a fall or the reverse (steps of 0 skipped)."""
    steps = [b - a for a, b in zip(values, values[1:], strict=False) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:], strict=False) if (a > 0) != (b > 0))


def momentum_run(ctx: StudyContext) -> dict[str, Any]:
    p: MomentumParams = ctx.params
    base_opt = ctx.base["train"]["optimizer"]
    lr = p.learning_rate or base_opt.get("learning_rate")
    if not isinstance(lr, int | float):
        raise ValueError(
            f"momentum_too_high needs a fixed learning rate: set params.learning_rate (the base's is {lr!r})"
        )
    runs = []
    for m in p.momenta:
        train = {
            "optimizer": {"name": "sgd", "learning_rate": float(lr), "momentum": m, "nesterov": False},
            "diagnostics": {"every": p.probe_every},
        }
        data = dict(ctx.base, train={**ctx.base["train"], **train})
        if base_opt.get("name") == "sgd":  # keep the base's other SGD settings (decay, clipping)
            data["train"]["optimizer"] = {**base_opt, **train["optimizer"]}
        runs.append(SubRun(momentum_name(m), data, f"momentum {m:g}"))
    results = ctx.train(runs)
    out: dict[str, Any] = {"learning_rate": float(lr), "runs": {}}
    for m, run in zip(p.momenta, runs, strict=True):
        r = results[run.name]
        records = read_records(r.run_dir / RECORDS_FILE) if (r.run_dir / RECORDS_FILE).is_file() else []
        trace = [
            {"step": int(pr["step"]), "loss": float(pr["loss"]), "kernel_norm": kernel_norm(pr)}
            for pr in probes(records)
        ]
        out["runs"][run.name] = {
            "momentum": m,
            "status": r.status,
            "val_accuracy": r.metrics.get("val_accuracy"),
            "val_loss": r.metrics.get("val_loss"),
            "history": read_history(r.run_dir) if r.metrics else [],
            "trace": trace,
        }
    return out


def trace_numbers(run: dict[str, Any]) -> dict[str, float]:
    """Norm growth (last and largest ‖θ‖ over the first), the probe loss's turns and its last value."""
    trace = [t for t in run["trace"] if math.isfinite(t["loss"]) and math.isfinite(t["kernel_norm"])]
    if not trace:
        return {
            "norm_growth": math.nan,
            "max_norm_growth": math.nan,
            "turns": 0,
            "norm_turns": 0,
            "last_loss": math.nan,
            "steps": 0,
        }
    first = trace[0]["kernel_norm"]
    return {
        "norm_growth": trace[-1]["kernel_norm"] / first,
        "max_norm_growth": max(t["kernel_norm"] for t in trace) / first,
        "turns": sign_changes([t["loss"] for t in trace]),
        "norm_turns": sign_changes([t["kernel_norm"] for t in trace]),
        "last_loss": trace[-1]["loss"],
        "steps": trace[-1]["step"],
    }


def momentum_memory(m: float) -> float:
    """How many steps the velocity remembers a gradient: ``v ← m·v − lr·g`` keeps a gradient's weight ``mᵏ``
    after k steps, a sum of ``1 / (1 − m)``; a constant gradient's step grows to that many times ``lr·g``."""
    return math.inf if m >= 1 else 1.0 / (1.0 - m)


def momentum_verdict(records: dict[str, Any], momenta: list[float]) -> tuple[str, list[str], bool | None]:
    ref = records["runs"][momentum_name(momenta[0])]
    high = records["runs"][momentum_name(momenta[-1])]
    r, h = trace_numbers(ref), trace_numbers(high)
    evidence = [
        f"Momentum {momenta[0]:g}: validation accuracy {pct(ref['val_accuracy'])}, ‖θ‖ grew ×{fmt(r['norm_growth'])} "
        f"(at most ×{fmt(r['max_norm_growth'])}), the probe loss turned {r['turns']} times and ended at "
        f"{fmt(r['last_loss'])}.",
        f"Momentum {momenta[-1]:g}: "
        + ("diverged (the loss became NaN or inf); " if high["status"] == "diverged" else "")
        + f"validation accuracy {pct(high['val_accuracy'])}, ‖θ‖ grew ×{fmt(h['norm_growth'])} (at most "
        f"×{fmt(h['max_norm_growth'])}), the probe loss turned {h['turns']} times and ended at {fmt(h['last_loss'])}.",
    ]
    if ref["val_accuracy"] is None:
        return "not settled: the reference run did not finish", evidence, None
    diverged = high["status"] == "diverged" or high["val_accuracy"] is None
    worse = diverged or high["val_accuracy"] < ref["val_accuracy"]
    wilder = diverged or h["max_norm_growth"] > r["max_norm_growth"]
    memory = momentum_memory(momenta[-1])
    evidence.append(
        f"A momentum of {momenta[-1]:g} remembers a gradient for about 1 / (1 − m) = {memory:,.0f} steps, against "
        f"{momentum_memory(momenta[0]):,.0f} for {momenta[0]:g}; the run took {h['steps']:,} steps."
    )
    if worse and wilder:
        outcome = (
            "diverged"
            if diverged
            else f"ended worse ({pct(high['val_accuracy'])} vs {pct(ref['val_accuracy'])})"
        )
        speed = f"the weights picked up speed (‖θ‖ up to ×{fmt(h['max_norm_growth'])} against ×{fmt(r['max_norm_growth'])})"
        if h["norm_turns"] == 0 and h["steps"] < memory:
            how = (
                f"and kept going the same way: in {h['steps']:,} steps, far fewer than the velocity's memory of "
                f"{memory:,.0f}, ‖θ‖ never turned back, so the overshoot-and-return the chapter describes had not "
                "even begun"
            )
        else:
            how = f"and overshot: ‖θ‖ turned {h['norm_turns']} times instead of settling"
        verdict = f"Momentum {momenta[-1]:g} {outcome}: {speed} {how}"
    elif worse:
        verdict = f"Momentum {momenta[-1]:g} ended worse, without a larger swing of the weights' norm"
    else:
        verdict = (
            f"Not in this run: momentum {momenta[-1]:g} ended at {pct(high['val_accuracy'])} against "
            f"{pct(ref['val_accuracy'])} with {momenta[0]:g}"
        )
    return verdict, evidence, worse


def _trace_figure(runs: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure as MplFigure

    from trainwell.experiments.report import figures
    from trainwell.experiments.report.collect import variant_color

    with figures.style():
        fig = MplFigure(figsize=(figures.WIDTH, 3.6), layout="constrained")
        ax_loss, ax_norm = fig.subplots(1, 2, sharex=True)
        for i, run in enumerate(runs.values()):
            steps = [t["step"] for t in run["trace"]]
            label = f"momentum {run['momentum']:g}"
            ax_loss.plot(steps, [t["loss"] for t in run["trace"]], color=variant_color(i), label=label)
            ax_norm.plot(steps, [t["kernel_norm"] for t in run["trace"]], color=variant_color(i), label=label)
        ax_loss.set(xlabel="step", ylabel="loss on the probe batch", yscale="log")
        ax_norm.set(xlabel="step", ylabel="‖θ‖ (all kernels)")
        ax_loss.legend()
    return fig


def momentum_report(rctx: ReportContext) -> StudyReport:
    p: MomentumParams = rctx.params
    runs = rctx.records["runs"]
    experiment = (
        f"The base net trained with SGD at momentum {', '.join(f'{m:g}' for m in p.momenta)}, learning rate "
        f"{rctx.records['learning_rate']:g}, probed every {p.probe_every} steps (the loss on a fixed batch and the "
        "norm of all kernels)."
    )
    rows = []
    for run in runs.values():
        t = trace_numbers(run)
        rows.append(
            [
                f"{run['momentum']:g}",
                pct(run["val_accuracy"]),
                fmt(run["val_loss"]),
                f"×{fmt(t['norm_growth'])}",
                f"×{fmt(t['max_norm_growth'])}",
                str(t["turns"]),
                run["status"],
            ]
        )
    blocks: list[Any] = [
        Table(
            ["momentum", "val accuracy", "val loss", "‖θ‖ end / init", "‖θ‖ max / init", "loss turns", "run"],
            rows,
        )
    ]
    if all(run["trace"] for run in runs.values()):
        blocks.append(
            Figure(
                rctx.figure("trace", _trace_figure(runs)), "Probe-batch loss and kernel norm against the step"
            )
        )
    return StudyReport.answered(
        rctx.study.question, experiment, blocks, momentum_verdict(rctx.records, p.momenta)
    )


MOMENTUM_TOO_HIGH = Study(
    kind="momentum_too_high",
    title="Momentum too close to 1",
    question="What may happen if you set the momentum hyperparameter too close to 1 (e.g., 0.99999) when using an SGD optimizer?",
    textbook=(
        "The algorithm picks up a lot of speed, overshoots the minimum, comes back, overshoots again and may "
        "oscillate many times, so it takes much longer to converge than with a smaller momentum"
    ),
    params=MomentumParams,
    run=momentum_run,
    report=momentum_report,
)
