"""The chapter's questions 3 and 4 on activation functions, measured on deep stacks of dense layers.

- ``selu_vs_relu`` (question 3): a deep SELU stack (LeCun normal) against the same ReLU stack (He normal),
  for the three advantages the chapter names: self-normalization through depth (the hidden layers' output
  mean and std, from the diagnostics' probes), no dead units (units through which no gradient flows for any
  example of a batch, counted on the trained model) and faster convergence (epochs and seconds to an
  accuracy both reach).
- ``activation_choice`` (question 4): one deep stack per hidden activation, each with the initializer the
  chapter's Table 11-1 pairs with it: accuracy, epochs to converge, time per epoch, dead and saturated
  fractions (diagnostics).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from trainwell.analysis.diagnostics.findings import judge
from trainwell.analysis.diagnostics.recorder import RECORDS_FILE, read_records
from trainwell.experiments.report.document import Figure, Table
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.measure import (
    CLAIM_WORDS,
    NOISE_Z,
    binomial_noise,
    convergence,
    curve_of,
    epochs_to_reach,
    fmt,
    hidden_layers,
    normalization_drift,
    overall,
    pct,
    probes,
    with_layers,
)
from trainwell.experiments.studies.nets import activation_table, deep_stack, output_layer
from trainwell.nn.activations import RELU_FAMILY, SATURATING
from trainwell.nn.layers import Dense
from trainwell.runs import load_run_model, read_history
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.experiments.studies.report import ReportContext

DIAGNOSTICS = {"every": "epoch"}
# Examples of the training split the dead units are counted on: as many as the diagnostics' probe batch
# (a live unit that fires on 1 % of inputs fires at least once among 512 with probability 0.994).
DEAD_PROBE = 512
# Epoch times within 10 % of each other are "as fast": epochs on a shared machine vary that much.
SAME_TIME = 0.10
# "Converged": the first epoch whose validation accuracy is within this of the run's best (one point: about
# the noise of an accuracy measured on a few thousand images).
CONVERGED_WITHIN = 0.01


def zero_gradient_units(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """Per hidden :class:`Dense` layer (every one but the last), ``(units with a zero derivative on every
    example of x, units)``: units whose activation passes no gradient back for any input, i.e. dead.

    The derivative is computed by autograd through the layer's own activation module at its pre-activations,
    so the count means the same for every activation (a ReLU unit with ``z ≤ 0`` everywhere is dead; a SELU
    unit has ``λα·e^z > 0`` until ``e^z`` underflows).
    """
    dense = [m for m in model.modules() if isinstance(m, Dense)][:-1]
    pre: dict[int, torch.Tensor] = {}
    handles = [
        d.linear.register_forward_hook(lambda _m, _i, out, k=k: pre.__setitem__(k, out.detach()))
        for k, d in enumerate(dense)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    counts = []
    for k, d in enumerate(dense):
        z = pre[k].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(d.activation(z).sum(), z)
        counts.append((int((grad == 0).all(dim=0).sum()), int(z.shape[1])))
    return counts


# --- question 3: SELU against ReLU ----------------------------------------------------------------------------


class SeluVsReluParams(Spec):
    """``selu_vs_relu``'s params: the stacks' depth and width."""

    depth: int = Field(default=20, ge=2)
    units: int = Field(default=100, ge=1)


def _stack_runs(ctx: StudyContext, depth: int, units: int, activations: list[Any]) -> list[SubRun]:
    output = output_layer(ctx.base["model"]["layers"])
    runs = []
    for act in activations:
        table = activation_table(act)
        extra = {k: v for k, v in table.items() if k != "name"}
        name = table["name"] + "".join(f"-{k}{v}" for k, v in extra.items())
        label = table["name"] + (f" ({', '.join(f'{k} {v}' for k, v in extra.items())})" if extra else "")
        layers = deep_stack(depth, units, table, output)
        data = with_layers(ctx.base, layers, train={"diagnostics": DIAGNOSTICS})
        runs.append(SubRun(name.replace("_", "-"), data, label))
    return runs


def _probe_summary(run_dir: Any) -> dict[str, Any]:
    """The first and last probe's per-layer output mean/std and dead/saturated fractions."""
    all_probes = probes(read_records(run_dir / RECORDS_FILE))
    out: dict[str, Any] = {}
    for key, probe in (("init", all_probes[0]), ("end", all_probes[-1])) if all_probes else ():
        layers = hidden_layers(probe)
        out[key] = {
            "drift": normalization_drift(probe),
            "mean": [float(layer["output_mean"]) for layer in layers],
            "std": [float(layer["output_std"]) for layer in layers],
            "dead_fraction": [layer.get("dead_fraction") for layer in layers],
            "saturated_fraction": [layer.get("saturated_fraction") for layer in layers],
        }
    return out


def selu_vs_relu_run(ctx: StudyContext) -> dict[str, Any]:
    p: SeluVsReluParams = ctx.params
    runs = _stack_runs(ctx, p.depth, p.units, ["selu", "relu"])
    results = ctx.train(runs)
    dataset = ctx.dataset()
    x = torch.as_tensor(dataset.x_train[:DEAD_PROBE])
    out: dict[str, Any] = {"validation_examples": len(dataset.x_valid), "runs": {}}
    for run in runs:
        r = results[run.name]
        entry: dict[str, Any] = {"status": r.status, "val_accuracy": r.metrics.get("val_accuracy")}
        if r.metrics:
            entry["history"] = read_history(r.run_dir)
            entry["probes"] = _probe_summary(r.run_dir)
            entry["dead_units"] = zero_gradient_units(load_run_model(r.run_dir), x)
        out["runs"][run.name] = entry
    return out


def selu_vs_relu_verdict(records: dict[str, Any]) -> tuple[str, list[str], bool | None]:
    """The answer to question 3: each advantage shown, contradicted or not settled by the numbers."""
    selu, relu = records["runs"]["selu"], records["runs"]["relu"]
    if "history" not in selu or "history" not in relu:
        return "not settled: a sub-run did not finish", [], None
    evidence = []
    # 1. self-normalization through depth: SELU's layers closer to mean 0 / std 1 at initialization
    di, dr = selu["probes"]["init"]["drift"], relu["probes"]["init"]["drift"]
    de, dre = selu["probes"]["end"]["drift"], relu["probes"]["end"]["drift"]
    normalizes = di < dr
    evidence.append(
        f"Self-normalization: the hidden layers' largest drift from mean 0 / std 1 (|mean| + |ln std|) is "
        f"{fmt(di)} for SELU and {fmt(dr)} for ReLU at initialization, {fmt(de)} and {fmt(dre)} after training; "
        f"SELU's output std runs from {fmt(selu['probes']['init']['std'][0])} to "
        f"{fmt(selu['probes']['init']['std'][-1])} through depth at initialization, ReLU's from "
        f"{fmt(relu['probes']['init']['std'][0])} to {fmt(relu['probes']['init']['std'][-1])}."
    )
    # 2. dead units: none in SELU, some in ReLU (both none: this run cannot tell)
    dead_s = sum(d for d, _ in selu["dead_units"])
    dead_r = sum(d for d, _ in relu["dead_units"])
    total = sum(n for _, n in relu["dead_units"])
    no_dead = None if dead_s == dead_r == 0 else dead_s < dead_r
    evidence.append(
        f"Dead units (no gradient for any of {DEAD_PROBE} training images) after training: SELU {dead_s} of "
        f"{total}, ReLU {dead_r} of {total}."
        + (" Neither net has dead units, so this run cannot show the advantage." if no_dead is None else "")
    )
    # 3. convergence: fewer epochs to an accuracy both reach (a tie in epochs: not settled)
    target, (es, er), (ss, sr) = convergence(selu["history"], relu["history"])
    faster = None if es == er else (es is not None and (er is None or es < er))
    noise = NOISE_Z * binomial_noise(
        selu["val_accuracy"], relu["val_accuracy"], int(records["validation_examples"])
    )
    evidence.append(
        f"Convergence: both reach {pct(target)} validation accuracy; SELU after {es} epoch(s) ({fmt(ss)} s), ReLU "
        f"after {er} ({fmt(sr)} s). Final validation accuracy: SELU {pct(selu['val_accuracy'])}, ReLU "
        f"{pct(relu['val_accuracy'])} (noise ±{100 * noise:.1f} points)."
    )
    names = ["self-normalization through depth", "no dead units", "faster convergence"]
    claims = [normalizes, no_dead, faster]
    parts = {
        word: [n for n, c in zip(names, claims, strict=True) if CLAIM_WORDS[c] == word]
        for word in CLAIM_WORDS.values()
    }
    verdict = "; ".join(f"{word}: {', '.join(items)}" for word, items in parts.items() if items)
    return verdict[0].upper() + verdict[1:], evidence, overall(claims)


def _depth_figure(runs: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure as MplFigure

    from trainwell.experiments.report import figures
    from trainwell.experiments.report.collect import variant_color

    with figures.style():
        fig = MplFigure(figsize=(figures.WIDTH, 3.6), layout="constrained")
        ax_mean, ax_std = fig.subplots(1, 2)
        for i, (name, run) in enumerate(runs.items()):
            color = variant_color(i)
            for moment, style in (("init", "-"), ("end", "--")):
                summary = run.get("probes", {}).get(moment)
                if not summary:
                    continue
                depth = range(1, len(summary["std"]) + 1)
                label = f"{name} ({'at init' if moment == 'init' else 'trained'})"
                ax_mean.plot(depth, summary["mean"], style, color=color, label=label)
                ax_std.plot(depth, summary["std"], style, color=color, label=label)
        ax_mean.set(xlabel="hidden layer", ylabel="output mean")
        ax_std.set(xlabel="hidden layer", ylabel="output std", yscale="log")
        ax_std.legend(fontsize=8)
    return fig


def selu_vs_relu_report(rctx: ReportContext) -> StudyReport:
    from trainwell.experiments.report import figures

    p: SeluVsReluParams = rctx.params
    runs = rctx.records["runs"]
    experiment = (
        f"Two stacks of {p.depth} dense layers of {p.units} units on the base data: SELU with LeCun normal "
        "initialization and ReLU with He normal (Table 11-1), trained alike; probed after every epoch."
    )
    rows = []
    for name, run in runs.items():
        if "history" not in run:
            rows.append([name, "–", "–", "–", "–", run["status"]])
            continue
        dead = sum(d for d, _ in run["dead_units"])
        total = sum(n for _, n in run["dead_units"])
        rows.append(
            [
                name,
                pct(run["val_accuracy"]),
                fmt(run["probes"]["init"]["drift"]),
                fmt(run["probes"]["end"]["drift"]),
                f"{dead}/{total}",
                run["status"],
            ]
        )
    blocks: list[Any] = [
        Table(["stack", "val accuracy", "drift at init", "drift trained", "dead units", "run"], rows)
    ]
    if all("history" in run for run in runs.values()):
        blocks.append(
            Figure(
                rctx.figure("depth", _depth_figure(runs)),
                "Hidden layers' output mean and std through depth, at initialization (solid) and trained (dashed)",
            )
        )
        groups = [rctx.group(name, [name], i) for i, name in enumerate(runs)]
        blocks.append(
            Figure(rctx.figure("curves", figures.curves_figure(groups, "accuracy")), "Accuracy per epoch")
        )
    return StudyReport.answered(rctx.study.question, experiment, blocks, selu_vs_relu_verdict(rctx.records))


SELU_VS_RELU = Study(
    kind="selu_vs_relu",
    title="Three advantages of SELU over ReLU",
    question="Name three advantages of the SELU activation function over ReLU.",
    textbook=(
        "SELU outputs can be negative, so the layers' mean output is closer to 0 (which helps against vanishing "
        "gradients); its derivative is never 0, so units cannot die; and under the right conditions (a "
        "sequential dense stack, LeCun normal initialization, standardized inputs) the net self-normalizes, "
        "which solves vanishing/exploding gradients and makes deep stacks converge fast"
    ),
    params=SeluVsReluParams,
    run=selu_vs_relu_run,
    report=selu_vs_relu_report,
)


# --- question 4: which activation when -----------------------------------------------------------------------

DEFAULT_ACTIVATIONS: list[Any] = [
    "selu",
    "elu",
    {"name": "leaky_relu", "alpha": 0.2},
    "relu",
    "tanh",
    "sigmoid",
    "softmax",
]
NON_SATURATING = ("selu", "elu", *RELU_FAMILY)


class ActivationChoiceParams(Spec):
    """``activation_choice``'s params: the hidden activations to compare (names or tables), depth, width."""

    activations: list[str | dict[str, Any]] = Field(
        default_factory=lambda: list(DEFAULT_ACTIVATIONS), min_length=2
    )
    depth: int = Field(default=10, ge=1)
    units: int = Field(default=100, ge=1)


def activation_choice_run(ctx: StudyContext) -> dict[str, Any]:
    p: ActivationChoiceParams = ctx.params
    runs = _stack_runs(ctx, p.depth, p.units, p.activations)
    results = ctx.train(runs)
    dataset = ctx.dataset()
    n, chance = len(dataset.x_valid), 1.0 / dataset.num_classes
    # A run "learned" when its best accuracy is above chance by more than the noise of n validation images.
    learned_above = chance + NOISE_Z * math.sqrt(chance * (1 - chance) / max(1, n))
    out: dict[str, Any] = {"validation_examples": n, "chance": chance, "runs": {}}
    for run in runs:
        r = results[run.name]
        entry: dict[str, Any] = {
            "label": run.label,
            "status": r.status,
            "activation": run.label.split(" ")[0],
        }
        if r.metrics:
            history = read_history(r.run_dir)
            curve = curve_of(history)
            summary = _probe_summary(r.run_dir).get("end", {})
            findings = sorted({f.code for f in judge(read_records(r.run_dir / RECORDS_FILE))})
            dead = [x for x in summary.get("dead_fraction", []) if x is not None]
            sat = [x for x in summary.get("saturated_fraction", []) if x is not None]
            entry.update(
                {
                    "val_accuracy": r.metrics["val_accuracy"],
                    "best_val_accuracy": max(curve),
                    "learned": max(curve) > learned_above,
                    "epochs_to_converge": (
                        epochs_to_reach(curve, max(curve) - CONVERGED_WITHIN)
                        if max(curve) > learned_above
                        else None
                    ),
                    # the median epoch: robust to an epoch slowed by another process on a shared machine
                    "seconds_per_epoch": statistics.median(row["seconds"] for row in history),
                    "findings": findings,
                    "dead_fraction": statistics.fmean(dead) if dead else None,
                    "saturated_fraction": statistics.fmean(sat) if sat else None,
                }
            )
        out["runs"][run.name] = entry
    return out


def activation_choice_verdict(records: dict[str, Any]) -> tuple[str, list[str], bool | None]:
    done = {n: r for n, r in records["runs"].items() if r.get("val_accuracy") is not None}
    if len(done) < 2:
        return "not settled: fewer than two activations finished", [], None
    n = int(records["validation_examples"])
    ranked = sorted(done, key=lambda k: done[k]["val_accuracy"], reverse=True)
    best = ranked[0]
    top = done[best]["val_accuracy"]

    def tied_with_best(k: str) -> bool:
        return top - done[k]["val_accuracy"] <= NOISE_Z * binomial_noise(top, done[k]["val_accuracy"], n)

    ties = [k for k in ranked if tied_with_best(k)]
    fastest_time = min(done[k]["seconds_per_epoch"] for k in done)
    fast = [k for k in done if done[k]["seconds_per_epoch"] <= fastest_time * (1 + SAME_TIME)]
    fastest = min(done, key=lambda k: done[k]["seconds_per_epoch"])
    quickest = min(done, key=lambda k: (done[k]["epochs_to_converge"] or math.inf, -done[k]["val_accuracy"]))
    evidence = [
        "Ranking by validation accuracy: "
        + ", ".join(f"{done[k]['label']} {pct(done[k]['val_accuracy'])}" for k in ranked)
        + f" (within the noise of the best: {', '.join(done[k]['label'] for k in ties)}).",
        f"Fastest per epoch (median epoch, within {100 * SAME_TIME:.0f} % of the fastest): "
        f"{', '.join(done[k]['label'] for k in fast)} ({fmt(done[fastest]['seconds_per_epoch'])} s); "
        f"fewest epochs to converge (within {100 * CONVERGED_WITHIN:.0f} point of its best): "
        f"{done[quickest]['label']} ({done[quickest]['epochs_to_converge']}).",
    ]
    dead = [
        f"{done[k]['label']} {pct(done[k]['dead_fraction'])}"
        for k in ranked
        if done[k].get("dead_fraction") is not None
    ]
    sat = [
        f"{done[k]['label']} {pct(done[k]['saturated_fraction'])}"
        for k in ranked
        if done[k].get("saturated_fraction") is not None
    ]
    if dead:
        evidence.append(
            f"Dead units after training (ReLU family, mean over hidden layers): {', '.join(dead)}."
        )
    if sat:
        evidence.append(f"Saturated outputs after training (sigmoid/tanh): {', '.join(sat)}.")
    found = [
        f"{done[k]['label']}: {', '.join(done[k]['findings'])}" for k in ranked if done[k].get("findings")
    ]
    if found:
        evidence.append(f"Diagnostics findings (at initialization or after training): {'; '.join(found)}.")
    non_sat = [k for k in done if done[k]["activation"] in NON_SATURATING]
    sat_like = [k for k in done if done[k]["activation"] in (*SATURATING, "softmax")]
    checks: list[tuple[str, bool]] = []
    if non_sat and sat_like:
        best_ns = max(non_sat, key=lambda k: done[k]["val_accuracy"])
        best_s = max(sat_like, key=lambda k: done[k]["val_accuracy"])
        a, b = done[best_ns]["val_accuracy"], done[best_s]["val_accuracy"]
        noise = NOISE_Z * binomial_noise(a, b, n)
        checks.append(
            (
                "a non-saturating activation beats tanh, logistic and softmax",
                None if abs(a - b) <= noise else a > b,
            )
        )
    if "selu" in done:
        checks.append(("SELU is (within the noise) the most accurate", "selu" in ties))
    verdict = (
        f"Most accurate here: {', '.join(done[k]['label'] for k in ties)}; fastest per epoch: "
        f"{', '.join(done[k]['label'] for k in fast)}; least accurate: {done[ranked[-1]]['label']}"
    )
    not_learned = [done[k]["label"] for k in ranked if not done[k].get("learned", True)]
    if not_learned:
        verdict += f"; no better than chance ({pct(records['chance'])}): {', '.join(not_learned)}"
    if checks:
        evidence.append(
            "Against the chapter's ranking (SELU > ELU > leaky ReLU > ReLU > tanh > logistic; softmax for the "
            "output layer only): " + "; ".join(f"{what}: {CLAIM_WORDS[ok]}" for what, ok in checks) + "."
        )
    return verdict, evidence, overall([ok for _, ok in checks])


def activation_choice_report(rctx: ReportContext) -> StudyReport:
    from trainwell.experiments.report import figures

    p: ActivationChoiceParams = rctx.params
    runs = rctx.records["runs"]
    experiment = (
        f"One stack of {p.depth} dense layers of {p.units} units per hidden activation, each with the initializer "
        "Table 11-1 pairs with it (LeCun for SELU, He for ReLU variants and ELU, Glorot for tanh, logistic and "
        "softmax), trained alike on the base data and probed after every epoch."
    )
    rows = [
        [
            run["label"],
            pct(run.get("val_accuracy")),
            str(run.get("epochs_to_converge") or "–"),
            fmt(run.get("seconds_per_epoch")),
            pct(run.get("dead_fraction")),
            pct(run.get("saturated_fraction")),
            ", ".join(run.get("findings", [])) or "–",
            run["status"],
        ]
        for run in runs.values()
    ]
    blocks: list[Any] = [
        Table(
            [
                "hidden activation",
                "val accuracy",
                "epochs to converge",
                "s / epoch",
                "dead units",
                "saturated",
                "findings",
                "run",
            ],
            rows,
            note=f"Epochs to converge: the first epoch within {100 * CONVERGED_WITHIN:.0f} point of the run's best "
            "validation accuracy; s / epoch: the median epoch. Dead and saturated: the last probe, averaged over the hidden layers (– where "
            "the measure does not apply to the activation).",
        )
    ]
    groups = [
        rctx.group(run["label"], [name], i)
        for i, (name, run) in enumerate(runs.items())
        if run.get("val_accuracy") is not None
    ]
    if groups:
        blocks.append(
            Figure(rctx.figure("curves", figures.curves_figure(groups, "accuracy")), "Accuracy per epoch")
        )
    return StudyReport.answered(
        rctx.study.question, experiment, blocks, activation_choice_verdict(rctx.records)
    )


ACTIVATION_CHOICE = Study(
    kind="activation_choice",
    title="Which activation when",
    question=(
        "In which cases would you want to use each of the following activation functions: SELU, leaky ReLU "
        "(and its variants), ReLU, tanh, logistic, and softmax?"
    ),
    textbook=(
        "SELU is a good default for deep MLPs (when self-normalization's conditions hold); leaky ReLU and its "
        "variants when speed matters; ReLU is simple and fast; tanh for an output in [-1, 1] (rarely in hidden "
        "layers); logistic for an output probability; softmax for the output layer of mutually exclusive classes"
    ),
    params=ActivationChoiceParams,
    run=activation_choice_run,
    report=activation_choice_report,
)
