"""The chapter's questions 1 and 2 on initialization, measured.

- ``symmetric_init`` (question 1): every weight of a layer set to one value, drawn by He initialization.
  The chapter says the units of a layer then stay identical through training (symmetry is never broken), so
  the net is no better than one with a single unit per layer. Measured: the diagnostics' ``symmetric_units``
  count of every hidden layer after training, and the accuracy against the same net with one unit per hidden
  layer and with He's random draw.
- ``zero_bias`` (question 2): biases initialized to 0 against a small random bias (N(0, σ²)), over seeds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from trainwell.analysis.diagnostics.findings import judge
from trainwell.analysis.diagnostics.recorder import RECORDS_FILE, read_records
from trainwell.experiments.report.document import Figure, Table
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.measure import (
    NOISE_Z,
    binomial_noise,
    hidden_layers,
    pct,
    probes,
    seed_noise,
    with_layers,
)
from trainwell.experiments.studies.nets import change_hidden, dense_indices, flat_layers
from trainwell.nn.initializers import variance_scaling_
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.experiments.studies.report import ReportContext

DIAGNOSTICS = {"every": "epoch"}


# --- question 1: one value for every weight -----------------------------------------------------------------


class SymmetricInitParams(Spec):
    """``symmetric_init``'s params.

    ``draw_seed`` seeds the He draw of each layer's value; ``reference_units`` is the width of the
    comparison net's hidden layers (1: "one unit per layer").
    """

    draw_seed: int = 0
    reference_units: int = Field(default=1, ge=1)


def he_constants(fan_ins: list[int], seed: int) -> list[float]:
    """One value per layer, drawn as He normal initialization draws a weight of a layer with that fan-in
    (a normal of std ``sqrt(2 / fan_in)`` truncated at two standard deviations, Keras's ``he_normal``), and
    taken as its magnitude: a negative constant would make every ReLU unit above the first layer output 0
    for every input (their inputs are ≥ 0), a different failure from the one the question is about."""
    values = []
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
        for i, fan_in in enumerate(fan_ins):
            torch.manual_seed(seed + i)
            weight = variance_scaling_(torch.empty(1, fan_in), 2.0, "fan_in", "truncated_normal")
            values.append(abs(float(weight[0, 0])))
    return values


def dense_fan_ins(layers: list[dict[str, Any]], input_size: int) -> list[int]:
    """The fan-in of each dense layer of the flat ``layers`` of a dense net on inputs of ``input_size``
    features (flatten, dense, dropout and activation layers only)."""
    fan_ins, size = [], input_size
    for layer in layers:
        kind = layer.get("type")
        if kind == "dense":
            fan_ins.append(size)
            size = int(layer["units"])
        elif kind in ("conv2d", "max_pooling2d", "avg_pooling2d", "global_average_pooling2d"):
            raise ValueError(
                f"symmetric_init needs a dense net (flatten, dense layers); the base has {kind!r}"
            )
    return fan_ins


def symmetric_init_run(ctx: StudyContext) -> dict[str, Any]:
    p: SymmetricInitParams = ctx.params
    dataset = ctx.dataset()
    flat = flat_layers(ctx.base["model"]["layers"])
    dense = dense_indices(flat)
    if len(dense) < 2:
        raise ValueError("symmetric_init needs a net with at least one hidden dense layer")
    constants = he_constants(dense_fan_ins(flat, math.prod(dataset.input_shape)), p.draw_seed)
    constant_layers = [dict(layer) for layer in flat]
    for i, value in zip(dense, constants, strict=True):
        constant_layers[i]["kernel_initializer"] = {"name": "constant", "value": value}
        constant_layers[i]["bias_initializer"] = {"name": "zeros"}
    he = change_hidden(flat, kernel_initializer={"name": "he_normal"})
    narrow = change_hidden(flat, kernel_initializer={"name": "he_normal"}, units=p.reference_units)
    train = {"diagnostics": DIAGNOSTICS}
    runs = [
        SubRun("constant", with_layers(ctx.base, constant_layers, train=train), "one He-drawn value"),
        SubRun(
            "one-unit",
            with_layers(ctx.base, narrow, train=train),
            f"{p.reference_units} unit{'s' if p.reference_units > 1 else ''} per hidden layer",
        ),
        SubRun("he-normal", with_layers(ctx.base, he, train=train), "He normal (random)"),
    ]
    results = ctx.train(runs)
    out: dict[str, Any] = {
        "constants": constants,
        "validation_examples": len(dataset.x_valid),
        "hidden_units": [int(flat[i]["units"]) for i in dense[:-1]],
        "runs": {},
    }
    for run in runs:
        result = results[run.name]
        records = read_records(result.run_dir / RECORDS_FILE) if result.metrics else []
        last = probes(records)[-1] if probes(records) else None
        findings = {f.code: f.evidence for f in judge(records)} if records else {}
        out["runs"][run.name] = {
            "label": run.label,
            "status": result.status,
            "val_accuracy": result.metrics.get("val_accuracy"),
            "epochs": result.metrics.get("epochs_run"),
            "symmetric": [
                {
                    "layer": layer["name"],
                    "units": layer["units"],
                    "symmetric_units": layer.get("symmetric_units", 0),
                }
                for layer in (hidden_layers(last) if last else [])
            ],
            "symmetric_units_finding": findings.get("symmetric_units"),
        }
    return out


def symmetric_init_verdict(records: dict[str, Any]) -> tuple[str, list[str], bool | None]:
    """The answer to question 1 from the records: (verdict, evidence, agrees with the chapter)."""
    runs = records["runs"]
    const, narrow, he = runs["constant"], runs["one-unit"], runs["he-normal"]
    if None in (const["val_accuracy"], narrow["val_accuracy"], he["val_accuracy"]):
        return "not settled: a sub-run did not finish", [], None
    layers = const["symmetric"]
    identical = bool(layers) and all(layer["symmetric_units"] == layer["units"] for layer in layers)
    n = int(records["validation_examples"])
    noise = NOISE_Z * binomial_noise(const["val_accuracy"], narrow["val_accuracy"], n)
    diff = const["val_accuracy"] - narrow["val_accuracy"]
    no_better = diff <= noise
    he_gain = he["val_accuracy"] - const["val_accuracy"]
    counts = ", ".join(f"{layer['layer']} {layer['symmetric_units']}/{layer['units']}" for layer in layers)
    evidence = [
        f"After {const['epochs']} epochs the constant-initialized net's hidden layers have these units sharing "
        f"their incoming weights with another unit: {counts or 'no hidden layer recorded'}"
        + (
            f" (finding symmetric_units: {const['symmetric_units_finding']})"
            if const["symmetric_units_finding"]
            else ""
        ),
        f"Validation accuracy: one He-drawn value {pct(const['val_accuracy'])}, {narrow['label']} "
        f"{pct(narrow['val_accuracy'])} (difference {100 * diff:+.1f} points; noise ±{100 * noise:.1f} points, "
        f"the sampling error of {n:,} validation images), He's random draw {pct(he['val_accuracy'])}.",
    ]
    if identical and no_better:
        verdict = (
            "No: every unit of each hidden layer stayed identical to the others through training, so the net "
            f"learned no better than {narrow['label']} ({pct(const['val_accuracy'])} vs "
            f"{pct(narrow['val_accuracy'])}), where He's random draw reached {pct(he['val_accuracy'])}"
        )
    elif identical:
        verdict = (
            "No, the units stayed identical; but the constant net scored above the narrow one beyond the noise "
            f"({pct(const['val_accuracy'])} vs {pct(narrow['val_accuracy'])})"
        )
    else:
        verdict = f"The units did not all stay identical ({counts}): the measurement contradicts the chapter"
    evidence.append(f"He's random draw beats the constant by {100 * he_gain:+.1f} points.")
    return verdict, evidence, identical and no_better


def symmetric_init_report(rctx: ReportContext) -> StudyReport:
    from trainwell.experiments.report import figures

    records = rctx.records
    constants = ", ".join(f"{c:.4f}" for c in records["constants"])
    hidden = records["hidden_units"]
    experiment = (
        f"The base net ({len(hidden)} hidden dense layers of {', '.join(map(str, hidden))} units) trained three "
        f"times: every kernel weight of each dense layer set to one value, the magnitude of one He-normal draw "
        f"for that layer's fan-in ({constants}; biases 0); the same net with {records['runs']['one-unit']['label']} "
        "(He normal); and the same net with He normal. Diagnostics probe each after "
        "every epoch and count the units whose incoming weights (and bias) equal another unit's."
    )
    rows = []
    for run in records["runs"].values():
        sym = ", ".join(f"{layer['symmetric_units']}/{layer['units']}" for layer in run["symmetric"]) or "–"
        rows.append([run["label"], pct(run["val_accuracy"]), sym, run["status"]])
    table = Table(
        ["initialization", "val accuracy", "identical units per hidden layer, after training", "run"], rows
    )
    blocks: list[Any] = [table]
    groups = [rctx.group(run["label"], [name], i) for i, (name, run) in enumerate(records["runs"].items())]
    if all(g.finished for g in groups):
        blocks.append(
            Figure(rctx.figure("curves", figures.curves_figure(groups, "accuracy")), "Accuracy per epoch")
        )
    return StudyReport.answered(rctx.study.question, experiment, blocks, symmetric_init_verdict(records))


SYMMETRIC_INIT = Study(
    kind="symmetric_init",
    title="One value for every weight, drawn by He initialization",
    question=(
        "Is it OK to initialize all the weights to the same value as long as that value is selected randomly "
        "using He initialization?"
    ),
    textbook=(
        "No: all the neurons of a layer would be perfectly identical and stay so (backpropagation cannot break "
        "the symmetry), as if each layer had one neuron"
    ),
    params=SymmetricInitParams,
    run=symmetric_init_run,
    report=symmetric_init_report,
)


# --- question 2: zero biases ----------------------------------------------------------------------------------


class ZeroBiasParams(Spec):
    """``zero_bias``'s params: the std of the random biases, and the seeds each initialization trains with."""

    bias_stddev: float = Field(default=0.1, gt=0)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)


def zero_bias_run(ctx: StudyContext) -> dict[str, Any]:
    p: ZeroBiasParams = ctx.params
    flat = flat_layers(ctx.base["model"]["layers"])
    inits = {
        "zeros": {"name": "zeros"},
        "random": {"name": "random_normal", "mean": 0.0, "stddev": p.bias_stddev},
    }
    runs = []
    for key, init in inits.items():
        layers = [
            dict(layer, bias_initializer=init) if layer.get("type") == "dense" else layer for layer in flat
        ]
        for seed in p.seeds:
            runs.append(SubRun(f"{key}-seed{seed}", with_layers(ctx.base, layers, train={"seed": seed})))
    results = ctx.train(runs)
    return {
        "validation_examples": len(ctx.dataset().x_valid),
        "runs": {
            name: {"val_accuracy": r.metrics.get("val_accuracy"), "status": r.status}
            for name, r in results.items()
        },
    }


def zero_bias_verdict(
    records: dict[str, Any], seeds: list[int]
) -> tuple[str, list[str], bool | None, float, float]:
    """(verdict, evidence, agrees, mean zero-bias accuracy, mean random-bias accuracy)."""
    runs = records["runs"]
    zeros = [runs[f"zeros-seed{s}"]["val_accuracy"] for s in seeds]
    rand = [runs[f"random-seed{s}"]["val_accuracy"] for s in seeds]
    if None in zeros or None in rand:
        return "not settled: a sub-run did not finish", [], None, math.nan, math.nan
    a, b = sum(zeros) / len(zeros), sum(rand) / len(rand)
    se = seed_noise(zeros, rand)
    how = f"over {len(seeds)} seeds"
    if se is None:
        se, how = (
            binomial_noise(a, b, int(records["validation_examples"])),
            "the sampling error of the validation set; one seed",
        )
    noise, diff = NOISE_Z * se, a - b
    evidence = [
        f"Mean validation accuracy: zero biases {pct(a)}, random biases {pct(b)} ({100 * diff:+.1f} points; "
        f"noise ±{100 * noise:.1f} points, from {how})."
    ]
    if abs(diff) <= noise:
        verdict = (
            f"Yes: zero biases trained as well as small random ones ({pct(a)} vs {pct(b)}, within the noise)"
        )
    elif diff > 0:
        verdict = f"Yes: zero biases trained better than small random ones ({pct(a)} vs {pct(b)})"
    else:
        verdict = f"Not here: zero biases trained worse than small random ones ({pct(a)} vs {pct(b)}, beyond the noise)"
    return verdict, evidence, diff >= -noise, a, b


def zero_bias_report(rctx: ReportContext) -> StudyReport:
    from trainwell.experiments.report import figures

    p: ZeroBiasParams = rctx.params
    runs = rctx.records["runs"]
    experiment = (
        f"The base net trained with every dense layer's bias initialized to 0, and to N(0, {p.bias_stddev:g}²), "
        f"with seeds {', '.join(map(str, p.seeds))} each (the weights are drawn alike for the same seed)."
    )
    rows = [
        [
            f"seed {s}",
            pct(runs[f"zeros-seed{s}"]["val_accuracy"]),
            pct(runs[f"random-seed{s}"]["val_accuracy"]),
        ]
        for s in p.seeds
    ]
    verdict, evidence, agrees, a, b = zero_bias_verdict(rctx.records, p.seeds)
    rows.append(["mean", pct(a), pct(b)])
    blocks: list[Any] = [Table(["", "bias 0: val accuracy", f"bias N(0, {p.bias_stddev:g}²)"], rows)]
    groups = [
        rctx.group("bias 0", [f"zeros-seed{s}" for s in p.seeds], 0),
        rctx.group(f"bias N(0, {p.bias_stddev:g}²)", [f"random-seed{s}" for s in p.seeds], 1),
    ]
    if all(g.finished for g in groups):
        blocks.append(Figure(rctx.figure("curves", figures.curves_figure(groups, "loss")), "Loss per epoch"))
    return StudyReport.answered(rctx.study.question, experiment, blocks, (verdict, evidence, agrees))


ZERO_BIAS = Study(
    kind="zero_bias",
    title="Biases initialized to 0",
    question="Is it OK to initialize the bias terms to 0?",
    textbook="Yes, it is perfectly fine; initializing them like the weights is fine too and makes little difference",
    params=ZeroBiasParams,
    run=zero_bias_run,
    report=zero_bias_report,
)
