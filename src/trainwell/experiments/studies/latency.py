"""The ``low_latency`` study: the chapter's low-latency recipe applied step by step, each step measured.

The chapter: "If you need a lightning-fast model at runtime, you may want to use fewer layers, fold the Batch
Normalization layers into the previous layers, and possibly use a faster activation function such as leaky
ReLU or just ReLU. Having a sparse model will also help. Finally, you may want to reduce the float precision
from 32 bits to 16 or even 8 bits." The steps are cumulative, each on the model of the step before:

1. **baseline**: the study's base config, trained;
2. **fewer layers**: only the first ``hidden_layers`` hidden dense layers (each with what follows it up to
   the next dense layer: its BN, its activation), trained;
3. **fold BN**: the model of step 2 with every BN folded into a dense layer
   (:func:`~trainwell.analysis.derived.fuse_run`);
4. **Leaky ReLU**: the architecture of step 2 with every hidden activation replaced by ``activation``, trained,
   then BN-folded as in step 3;
5. **sparse**: the model of step 4 pruned by magnitude to ``sparsity`` and fine-tuned with the masks frozen
   (:func:`~trainwell.analysis.derived.prune_run`); with ``sparse_execution``, a row 5′ times the same model
   with its kernels in CSR form (:class:`CSRLinear`), since PyTorch's dense product does not skip zeros;
6. one row per lower ``precision``: the model of step 5 in that precision
   (:func:`~trainwell.analysis.derived.export_run`).

Each step's test accuracy comes from its folder; the latencies of all steps are measured together at the end
with :func:`~trainwell.analysis.latency.latency_rows` (median of many forward passes, the models' runs
interleaved so that a change of load on a shared machine affects them all alike).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from trainwell.analysis.latency import BATCH_SIZES, DEFAULT_RUNS
from trainwell.analysis.pruning import Scope
from trainwell.errors import ConfigError
from trainwell.experiments.studies.base import Study, StudyContext, StudyReport, SubRun
from trainwell.experiments.studies.nets import activation_table, dense_indices, flat_layers
from trainwell.nn.activations import ActivationSpec, LeakyReLUSpec
from trainwell.nn.layers import Dense
from trainwell.runs import METRICS, MODEL
from trainwell.spec import Spec
from trainwell.train.checkpoint import load_weights

if TYPE_CHECKING:  # the report package imports the studies: its modules are imported where they are used
    from trainwell.experiments.report.document import Answer, Table

# Latencies within 10 % of each other are "about the same": medians on a shared CPU vary that much.
SAME_LATENCY = 0.10
BASELINE, FEWER, LEAKY = "baseline", "fewer-layers", "leaky-relu"
SPARSE_CSR = "sparse, CSR"
ACTIVATION_LABELS = {
    "leaky_relu": "Leaky ReLU",
    "relu": "ReLU",
    "elu": "ELU",
    "selu": "SELU",
    "prelu": "PReLU",
}


class LowLatencyParams(Spec):
    """The ``params`` of a ``low_latency`` analysis."""

    # "Fewer layers": how many hidden dense layers to keep, counted from the input.
    hidden_layers: int = Field(default=5, ge=1)
    activation: ActivationSpec = LeakyReLUSpec(name="leaky_relu", alpha=0.2)  # the chapter's slope
    sparsity: float = Field(default=0.5, gt=0, lt=1)  # magnitude pruning of the dense kernels
    scope: Scope = "per_layer"
    finetune_epochs: int = Field(default=1, ge=0)  # after pruning, with the masks frozen
    # Also time the sparse model with CSR kernels (torch.sparse), beside its dense kernels full of zeros.
    sparse_execution: bool = True
    precisions: list[Literal["bfloat16", "float16", "int8"]] = Field(
        default_factory=lambda: ["bfloat16", "int8"]
    )
    batch_sizes: list[int] = Field(default_factory=lambda: list(BATCH_SIZES))
    latency_runs: int = Field(default=DEFAULT_RUNS, ge=1)  # timed forward passes per model and batch size
    threads: int | None = Field(default=1, ge=1)  # torch CPU threads while timing (None: as it is)

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(b < 1 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"batch_sizes must be distinct sizes ≥ 1, got {value}")
        return sorted(value)


# --- the architectures -----------------------------------------------------------------------------------------


def keep_hidden(layers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``layers`` unrolled, with only the first ``count`` hidden dense layers: what comes before the first
    dense layer, each kept hidden dense layer with what follows it up to the next dense layer (its BN, its
    activation, its dropout), then the output layer and what follows it."""
    flat = flat_layers(layers)
    dense = dense_indices(flat)
    hidden = dense[:-1]
    if count >= len(hidden):
        raise ConfigError(
            f"params.hidden_layers = {count}, but the base model has {len(hidden)} hidden dense layers; "
            f"give fewer than {len(hidden)} to make it smaller"
        )
    return flat[: hidden[count]] + flat[dense[-1] :]


def replace_hidden_activations(
    layers: list[dict[str, Any]], activation: dict[str, Any]
) -> list[dict[str, Any]]:
    """``layers`` unrolled, with every activation below the output layer set to ``activation``: the hidden
    dense layers' own (unless linear) and every activation layer."""
    flat = flat_layers(layers)
    output = dense_indices(flat)[-1]
    for i, layer in enumerate(flat[:output]):
        own = (
            layer.get("type") == "dense"
            and activation_table(layer.get("activation", "linear"))["name"] != "linear"
        )
        if layer.get("type") == "activation" or own:
            flat[i]["activation"] = copy.deepcopy(activation)
    return flat


def with_layers(base: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    data["model"]["layers"] = layers
    return data


def activation_label(act: dict[str, Any]) -> str:
    """``leaky_relu`` as the chapter writes it: Leaky ReLU."""
    return ACTIVATION_LABELS.get(act["name"], act["name"])


def activation_text(act: dict[str, Any]) -> str:
    """The activation with its parameters: ``Leaky ReLU (alpha = 0.2)``."""
    extra = ", ".join(f"{k} = {v:g}" for k, v in act.items() if k != "name" and isinstance(v, float | int))
    return activation_label(act) + (f" ({extra})" if extra else "")


class CSRLinear(nn.Module):
    """``y = x Wᵀ + b`` with the kernel ``W`` stored in CSR form, so the product skips its zeros
    (``torch.sparse``): how a sparse model runs sparse rather than as a dense matrix full of zeros."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # torch calls its CSR support beta; the product is what we time
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.weight = nn.Parameter(linear.weight.detach().to_sparse_csr(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.T).T  # (out, in) sparse @ (in, batch) dense
        return y if self.bias is None else y + self.bias


def with_csr_kernels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose dense layers multiply by their kernels in CSR form (same outputs)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, Dense):
            module.linear = CSRLinear(module.linear)
    return model


# --- measuring ----------------------------------------------------------------------------------------------------


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS).read_text())


def saved_numbers(run_dir: Path) -> dict[str, Any]:
    """From a run folder's saved ``model.pt``: parameters, hidden dense layers, BN layers, the exact-zero share
    of the dense kernels, and the file's size."""
    state = load_weights(run_dir / MODEL)
    kernels = [k for k, v in state.items() if k.endswith(".linear.weight") and v.dim() == 2]
    bns = {k.rsplit(".", 1)[0] for k in state if k.endswith("running_mean")}
    zeros = sum(int((state[k] == 0).sum()) for k in kernels)
    return {
        "parameters": sum(
            v.numel() for k, v in state.items() if v.is_floating_point() and "running" not in k
        ),
        "dense_layers": len(kernels),
        "batch_norms": len(bns),
        "sparsity": zeros / sum(state[k].numel() for k in kernels),
        "size_bytes": (run_dir / MODEL).stat().st_size,
    }


def _test_accuracy(model: nn.Module, run_dir: Path, ctx: StudyContext) -> float:
    from trainwell.runs import load_run_config
    from trainwell.train.loop import evaluate

    config = load_run_config(run_dir)
    data = ctx.dataset(config)
    result = evaluate(model, data.x_test, data.y_test, config.train.loss, config.train.eval_batch_size)
    return result["accuracy"]


def run(ctx: StudyContext) -> dict[str, Any]:
    """Train the three architectures, fold, prune, export, then time every step's model together."""
    from trainwell.analysis.derived import export_run, fuse_run, prune_run
    from trainwell.analysis.latency import latency_rows
    from trainwell.analysis.precision import to_precision
    from trainwell.runs import load_run_model

    p: LowLatencyParams = ctx.params
    base = ctx.base
    fewer = keep_hidden(base["model"]["layers"], p.hidden_layers)
    hidden = len(dense_indices(flat_layers(base["model"]["layers"]))) - 1
    act = p.activation.model_dump(mode="json")
    results = ctx.train(
        [
            SubRun(BASELINE, copy.deepcopy(base)),
            SubRun(FEWER, with_layers(base, fewer)),
            SubRun(LEAKY, with_layers(base, replace_hidden_activations(fewer, act))),
        ]
    )
    for name, result in results.items():
        if result.diverged:
            raise RuntimeError(f"sub-run {name!r} diverged ({result.error}); the recipe needs every step")
    ctx.derived("fewer-layers-folded", lambda out: fuse_run(results[FEWER].run_dir, out=out, latency_runs=0))
    ctx.derived("leaky-relu-folded", lambda out: fuse_run(results[LEAKY].run_dir, out=out, latency_runs=0))
    ctx.derived(
        "sparse",
        lambda out: prune_run(
            ctx.run_dir("leaky-relu-folded"),
            sparsity=p.sparsity,
            scope=p.scope,
            finetune_epochs=p.finetune_epochs,
            out=out,
            progress=ctx.progress,
        ),
    )
    exported = ctx.derived(
        "export",
        lambda out: export_run(ctx.run_dir("sparse"), p.precisions, out=out, latency_runs=0),
        done_file="export.json",
    )
    steps = [
        {"step": "baseline", "change": "the base model", "folder": BASELINE},
        {
            "step": "fewer layers",
            "change": f"{p.hidden_layers} of the {hidden} hidden dense layers kept",
            "folder": FEWER,
        },
        {"step": "fold BN", "change": "every BN folded into a dense layer", "folder": "fewer-layers-folded"},
        {
            "step": activation_label(act),
            "change": f"hidden activations {activation_text(act)}, retrained, BN folded",
            "folder": "leaky-relu-folded",
        },
        {
            "step": "sparse",
            "change": f"kernels pruned to {100 * p.sparsity:g} %, fine-tuned {_epochs(p.finetune_epochs)}",
            "folder": "sparse",
        },
    ]
    models = {}
    for step in steps:
        run_dir = ctx.run_dir(step["folder"])
        step |= saved_numbers(run_dir)
        step["test_accuracy"] = _metrics(run_dir)["test_accuracy"]
        models[step["step"]] = load_run_model(run_dir)
    sparse = steps[-1]
    sparse["sparse_bytes"] = _metrics(ctx.run_dir("sparse"))["sparse_bytes"]
    if p.sparse_execution:
        csr = with_csr_kernels(models["sparse"])
        steps.append(
            sparse
            | {
                "step": SPARSE_CSR,
                "change": "the sparse model with CSR kernels (torch.sparse)",
                "test_accuracy": _test_accuracy(csr, ctx.run_dir("sparse"), ctx),
                "variant_of": "sparse",
            }
        )
        models[SPARSE_CSR] = csr
    for row in exported["rows"]:
        if row["precision"] == "float32":
            continue
        steps.append(
            sparse
            | {
                "step": row["precision"],
                "change": f"the sparse model in {row['precision']}",
                "folder": "export",
                "test_accuracy": row["test_accuracy"],
                "size_bytes": row["file_bytes"],
                "precision": row["precision"],
                "variant_of": "sparse",
            }
        )
        steps[-1].pop("sparse_bytes", None)
        models[row["precision"]] = to_precision(models["sparse"], row["precision"])
    input_shape = tuple(ctx.dataset().input_shape)
    ctx.say(f"timing {len(models)} models at batch sizes {p.batch_sizes}, {p.latency_runs} runs each")
    timings = latency_rows(models, input_shape, tuple(p.batch_sizes), runs=p.latency_runs, threads=p.threads)
    for step in steps:
        step["latency"] = {
            str(t["batch_size"]): {k: t[k] for k in ("median_ms", "p10_ms", "p90_ms", "runs", "threads")}
            for t in timings
            if t["model"] == step["step"]
        }
    return {"steps": steps, "batch_sizes": p.batch_sizes, "test_examples": len(ctx.dataset().x_test)}


# --- the report -------------------------------------------------------------------------------------------------


def predecessor(steps: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """The step that step ``index`` changed: the one before it, or, for a row that is another form of a step
    (a precision, CSR kernels), that step."""
    of = steps[index].get("variant_of")
    if of:
        return next(s for s in steps if s["step"] == of)
    return steps[index - 1]


def step_number(steps: list[dict[str, Any]], index: int) -> str:
    """``3`` for the third step of the recipe; ``5′`` for another form of step 5 (CSR kernels); the
    precision rows share the number after the last step (lower precision is the recipe's last step)."""
    if steps[index].get("precision"):
        return str(max(i for i, s in enumerate(steps) if not s.get("variant_of")) + 2)
    if steps[index].get("variant_of"):
        return f"{steps.index(predecessor(steps, index)) + 1}′"
    return str(index + 1)


def speedup(step: dict[str, Any], reference: dict[str, Any], batch: int) -> float:
    """How many times faster ``step`` runs than ``reference`` at ``batch`` (ratio of the medians)."""
    key = str(batch)
    return reference["latency"][key]["median_ms"] / step["latency"][key]["median_ms"]


def compared(ratio: float, reference: str, batch: int) -> str:
    """``ratio`` (a speed-up over ``reference``) in words, at ``batch``."""
    if abs(ratio - 1) <= SAME_LATENCY:
        return f"about as fast as {reference} at batch {batch}"
    if ratio > 1:
        return f"{ratio:.2f}× faster than {reference} at batch {batch}"
    return f"slower than {reference} at batch {batch} ({ratio:.2f}× its speed)"


def steps_table(records: dict[str, Any]) -> Table:
    from trainwell.experiments.report.answers import pct, points
    from trainwell.experiments.report.document import Table

    steps, batches = records["steps"], records["batch_sizes"]
    first = steps[0]
    rows = []
    for i, s in enumerate(steps):
        size = f"{s['size_bytes'] / 1024:,.0f} KB"
        if s.get("sparse_bytes"):
            size += f" ({s['sparse_bytes'] / 1024:,.0f} KB sparse)"
        row = [
            f"{step_number(steps, i)}. {s['step']}",
            s["change"],
            str(s["dense_layers"] - 1),
            str(s["batch_norms"]),
            f"{s['parameters']:,}",
            pct(s["sparsity"]),
            size,
            pct(s["test_accuracy"]),
            points(s["test_accuracy"] - first["test_accuracy"]) if i else "–",
        ]
        for b in batches:
            row += [f"{s['latency'][str(b)]['median_ms']:.3f}", f"{speedup(s, first, b):.2f}×"]
        rows.append(row)
    columns = ["step", "change", "hidden", "BN", "parameters", "sparsity", "size", "test acc.", "vs baseline"]
    for b in batches:
        columns += [f"ms @ {b}", f"speed-up @ {b}"]
    runs = steps[0]["latency"][str(batches[0])]
    return Table(
        columns,
        rows,
        align=["l", "l", *["r"] * (len(columns) - 2)],
        note=f"Latency: median milliseconds per forward pass of a batch of that size, {runs['runs']} timed runs "
        f"each on {runs['threads']} CPU thread{'' if runs['threads'] == 1 else 's'}, all models interleaved; speed-up against the baseline. "
        "Steps are cumulative; the CSR row and each precision row are the sparse model run sparse or in that "
        "precision. Size: model.pt as "
        "saved (dense kernels); the sparse model's kernels stored sparse (CSR) in brackets.",
    )


def latency_figure(records: dict[str, Any]) -> Any:
    """Speed-up against the baseline at each batch size (bars), and test accuracy (line), per step."""
    from matplotlib.figure import Figure as MplFigure

    from trainwell.experiments.report import figures
    from trainwell.experiments.report.collect import variant_color

    steps, batches = records["steps"], records["batch_sizes"]
    names = [s["step"] for s in steps]
    with figures.style():
        fig = MplFigure(figsize=(figures.WIDTH, 3.8))
        ax, acc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        width = 0.8 / len(batches)
        for j, b in enumerate(batches):
            xs = [i + (j - (len(batches) - 1) / 2) * width for i in range(len(steps))]
            ys = [speedup(s, steps[0], b) for s in steps]
            ax.bar(xs, ys, width, color=variant_color(j), label=f"batch {b}")
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{y:.1f}×", (x, y), ha="center", va="bottom", fontsize=8, color=figures.INK)
        ax.axhline(1.0, color=figures.MUTED, linewidth=1, linestyle="--")
        ax.set_xticks(range(len(steps)), names, rotation=20, ha="right")
        ax.set_ylabel("speed-up vs baseline (×)")
        ax.set_title("Latency: speed-up of each step")
        ax.legend(loc="upper left")
        acc.plot(range(len(steps)), [100 * s["test_accuracy"] for s in steps], marker="o", color=figures.INK)
        acc.set_xticks(range(len(steps)), names, rotation=20, ha="right")
        acc.set_ylabel("test accuracy (%)")
        acc.set_title("Accuracy after each step")
    return fig


def _answer(records: dict[str, Any]) -> tuple[Answer, bool | None]:
    from trainwell.experiments.report.answers import pct, points
    from trainwell.experiments.report.document import Answer

    steps, batches = records["steps"], records["batch_sizes"]
    first = steps[0]
    evidence, helped, hurt = [], 0, 0
    for i, s in enumerate(steps[1:], 1):
        before = predecessor(steps, i)
        ratios = [speedup(s, before, b) for b in batches]
        parts = [compared(r, before["step"], b) for r, b in zip(ratios, batches, strict=True)]
        evidence.append(
            f"{s['step']}: "
            + ", ".join(parts)
            + f"; accuracy {pct(s['test_accuracy'])} ({points(s['test_accuracy'] - before['test_accuracy'])})."
        )
        helped += any(r > 1 + SAME_LATENCY for r in ratios)
        hurt += all(r < 1 - SAME_LATENCY for r in ratios)
    # The verdict: every float32 step together, then any step that is faster still at some batch size.
    last = max((s for s in steps if not s.get("variant_of")), key=steps.index)
    verdict = (
        f"steps 2–{steps.index(last) + 1} together: "
        + ", ".join(f"{speedup(last, first, b):.1f}× faster at batch {b}" for b in batches)
        + f", for {points(last['test_accuracy'] - first['test_accuracy'])} of test accuracy"
    )
    for b in batches:
        fastest = max(steps, key=lambda s, b=b: speedup(s, first, b))
        if speedup(fastest, first, b) > (1 + SAME_LATENCY) * speedup(last, first, b):
            verdict += f"; at batch {b}, {fastest['step']} is fastest ({speedup(fastest, first, b):.1f}×)"
    # Where the accuracy went: the step that lost the most against the step it changed, if beyond the noise.
    drops = [
        (predecessor(steps, i)["test_accuracy"] - s["test_accuracy"], s) for i, s in enumerate(steps) if i
    ]
    drop, worst = max(drops, key=lambda d: d[0])
    n = records.get("test_examples") or 0
    acc = worst["test_accuracy"]
    noise = 2 * math.sqrt(2 * acc * (1 - acc) / n) if n else math.inf  # 2 standard errors of a difference
    if drop > noise:
        verdict += f"; the {worst['step']} step cost the most accuracy ({points(-drop)})"
    tone = "good" if any(speedup(last, first, b) > 1 + SAME_LATENCY for b in batches) else "neutral"
    changed = len(steps) - 1
    evidence.append(
        f"{helped} of {changed} steps made the model faster than the step before at some batch size; "
        f"{hurt} made it slower at every batch size."
    )
    agrees = True if helped == changed else (False if hurt else None)
    question = "How much faster does each step of the low-latency recipe make the model, and at what cost?"
    return Answer(question=question, verdict=verdict, evidence=evidence, tone=tone), agrees


def report(rctx: Any) -> StudyReport:
    from trainwell.experiments.report.document import Block, Figure

    records, p = rctx.records, rctx.params
    first = records["steps"][0]
    experiment = (
        f"The base model ({first['dense_layers'] - 1} hidden dense layers, {first['batch_norms']} BN layers) "
        "made fast by the chapter's recipe, step by step and cumulatively: fewer layers, BN folded, "
        f"{activation_text(p.activation.model_dump(mode='json'))}, {100 * p.sparsity:g} % of the kernel weights "
        "pruned, then "
        f"{', '.join(p.precisions)}. Test accuracy on {records['test_examples']:,} test images; latencies "
        "measured on this machine's CPU with PyTorch in eager mode, where a pruned kernel is still a dense "
        "matrix holding zeros"
        + (
            "; the sparse model is timed a second time with CSR kernels (torch.sparse)."
            if p.sparse_execution
            else "."
        )
    )
    fig = rctx.figure("latency", latency_figure(records))
    answer, agrees = _answer(records)
    blocks: list[Block] = [
        steps_table(records),
        Figure(fig, "Speed-up over the baseline at each batch size, and the test accuracy, after each step."),
    ]
    return StudyReport(experiment=experiment, blocks=blocks, answer=answer, agrees=agrees)


LOW_LATENCY = Study(
    kind="low_latency",
    title="A low-latency model, step by step",
    question="How much faster does each step of the low-latency recipe make the model, and at what cost?",
    textbook="fewer layers, folded BN, a fast activation such as Leaky ReLU, a sparse model and lower float "
    "precision each make the model faster at run time",
    params=LowLatencyParams,
    run=run,
    report=report,
)
