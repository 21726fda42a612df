"""Probes: what each layer of a net does on a fixed batch, as plain records (dicts of numbers and lists).

A *probe* runs one forward and one backward pass of the model on a fixed probe batch, with forward hooks on
every probed layer that are removed afterwards, and returns a record::

    {"record": "probe", "moment": "init", "step": 0, "epoch": 0, "probe_size": 512, "loss": 2.31,
     "input": {"mean": ..., "std": ...},
     "layers": [{"name": "dense_1", "kind": "dense", "activation": "sigmoid", "units": 100, "output": False,
                 "output_mean": ..., "output_std": ..., "hist_range": [0.0, 1.0], "hist_counts": [...],
                 "nonfinite_fraction": 0.0, "saturated_fraction": 0.93,          # sigmoid / tanh only
                 "dead_units": 0, "dead_fraction": 0.0,                         # ReLU family only
                 "weight_norm": ..., "grad_norm": ..., "grad_rms": ..., "grad_to_weight_ratio": ...,  # with
                 "kernel_mean_square_x_fan_in": ..., "symmetric_units": 0, "trainable": True}, ...]}  # a kernel

The probe has no side effect on training: it draws its dropout masks from a forked RNG, restores every buffer
(BatchNorm's moving statistics), computes gradients with ``torch.autograd.grad`` (no ``.grad`` is touched) and
puts the model back in the mode it found it in. It runs the model in training mode, because that is what
training sees (BatchNorm on batch statistics, dropout on).

Updates are measured separately, around one optimizer step: :func:`kernel_snapshot` before it and
:func:`update_record` after it give ``{"record": "update", "step": s, "layers": {name: ‖Δw‖ / ‖w‖}}``.

No judgment is made here: :mod:`trainwell.analysis.diagnostics.findings` turns records into findings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainwell.nn.activations import RELU_FAMILY, ElementwisePReLU
from trainwell.nn.build import split_output
from trainwell.nn.layers import BatchNorm, Dense
from trainwell.train.losses import LOSSES

# The chapter's (and Glorot & Bengio's) sense of "saturated": a sigmoid output within 0.01 of 0 or 1, a tanh
# output within 0.01 of -1 or 1, where the derivative is nearly 0.
SATURATION_MARGIN = 0.01
# Enough bins to see the shape of a distribution (Glorot & Bengio's figures), few enough to keep records small.
HISTOGRAM_BINS = 50
# The probe batch's size by default: large enough that a live ReLU unit that fires on ~1 % of inputs fires at
# least once with probability 1 - 0.99^512 ≈ 0.994, small enough to cost about ten training steps (30 ms on
# the CIFAR-10 baseline, benchmarks/bench_diagnostics.py).
PROBE_SIZE = 512
# Dropout masks in the probe come from this seed, so two probes of the same weights give the same record.
PROBE_SEED = 0
# Two units are symmetric when their incoming weight vectors (with the bias) differ by at most this fraction
# of their norm: exactly equal up to float32 rounding in the matmuls that trained them.
SYMMETRY_RTOL = 1e-6

# The Keras name of each activation module (the inverse of trainwell.nn.activations.ACTIVATIONS).
ACTIVATION_MODULE_NAMES: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    ElementwisePReLU: "prelu",
    nn.RReLU: "rrelu",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.SiLU: "swish",
    nn.GELU: "gelu",
    nn.Softmax: "softmax",
    nn.Identity: "linear",
}
# Output bounds of the saturating activations (the "logistic" alias is the same module as "sigmoid").
# Its keys are nn.activations.SATURATING (a test checks that they stay the same).
SATURATION_BOUNDS: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "logistic": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
}


@dataclass(frozen=True)
class ProbedLayer:
    """A layer whose output the probe records: a child of the model's logits part.

    ``kind`` is ``"dense"`` (a :class:`~trainwell.nn.layers.Dense` or ``nn.Linear``), ``"batch_normalization"``
    or ``"activation"`` (an activation layer of its own); ``activation`` is the Keras name of the function
    applied last (``"linear"`` for a batch norm or a linear dense layer); ``output`` marks the last dense layer.
    """

    name: str
    kind: str
    activation: str
    module: nn.Module
    kernel: nn.Parameter | None
    bias: nn.Parameter | None
    output: bool


def activation_name(module: nn.Module) -> str:
    """The Keras name of an activation module (``nn.ReLU()`` → ``"relu"``); ``"other"`` for one it doesn't know."""
    return ACTIVATION_MODULE_NAMES.get(type(module), "other")


def probed_layers(model: nn.Module) -> list[ProbedLayer]:
    """The layers of ``model`` (an ``nn.Sequential``) that the probe records, bottom to top.

    Dense and linear layers, batch norms and activation layers are probed; flatten, dropout and the split
    output activation (softmax / sigmoid, see :func:`trainwell.nn.build.split_output`) are not.
    """
    logits_model = split_output(model)[0] if isinstance(model, nn.Sequential) else model
    layers: list[ProbedLayer] = []
    for name, child in logits_model.named_children():
        if isinstance(child, Dense):
            layers.append(
                ProbedLayer(
                    name,
                    "dense",
                    activation_name(child.activation),
                    child,
                    child.linear.weight,
                    child.linear.bias,
                    False,
                )
            )
        elif isinstance(child, nn.Linear):
            layers.append(ProbedLayer(name, "dense", "linear", child, child.weight, child.bias, False))
        elif isinstance(child, nn.BatchNorm1d | BatchNorm):
            layers.append(ProbedLayer(name, "batch_normalization", "linear", child, None, None, False))
        elif type(child) in ACTIVATION_MODULE_NAMES and not isinstance(child, nn.Identity):
            layers.append(ProbedLayer(name, "activation", activation_name(child), child, None, None, False))
    dense = [i for i, layer in enumerate(layers) if layer.kind == "dense"]
    if dense:
        last = layers[dense[-1]]
        layers[dense[-1]] = ProbedLayer(
            last.name, last.kind, last.activation, last.module, last.kernel, last.bias, True
        )
    return layers


# --- statistics on one tensor: pure functions, tested on tiny tensors by hand --------------------------------


def as_units(output: torch.Tensor | np.ndarray) -> np.ndarray:
    """A layer's output as a float array ``(values per unit, units)``: every axis but the last (the units) is
    flattened into the first.

    Statistics run in NumPy on one host copy of the output: a probe computes a dozen small reductions per
    layer, and as torch ops each would be a parallel region of its own (slow on a busy CPU) or a device
    synchronisation (on a GPU).
    """
    if isinstance(output, torch.Tensor):
        output = output.detach().float().cpu().numpy()
    values = np.asarray(output, dtype=np.float32)
    return values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(-1, 1)


def saturated_fraction(
    output: torch.Tensor | np.ndarray, activation: str, margin: float = SATURATION_MARGIN
) -> float:
    """The fraction of ``output``'s values within ``margin`` of the bounds of a saturating ``activation``.

    Sigmoid: ``a < margin or a > 1 - margin``; tanh: ``a < -1 + margin or a > 1 - margin``.
    """
    lo, hi = SATURATION_BOUNDS[activation]
    values = as_units(output)
    return float(((values < lo + margin) | (values > hi - margin)).mean())


def dead_units(output: torch.Tensor | np.ndarray) -> int:
    """The number of units whose output is ≤ 0 for every value of the probe batch.

    For ReLU that is "outputs 0 on every sample"; for Leaky ReLU, RReLU and PReLU (slope ≥ 0) an output ≤ 0
    means the input was ≤ 0, so it is "stays on the negative side on every sample": the unit's gradient then
    only flows through the small negative slope (Leaky) or not at all (ReLU).
    """
    return int((as_units(output) <= 0).all(axis=0).sum())


def histogram(
    output: torch.Tensor | np.ndarray, activation: str, bins: int = HISTOGRAM_BINS
) -> tuple[list[float], list[int]]:
    """``([lo, hi], counts)``: a histogram of the finite values of ``output`` in ``bins`` equal bins.

    The range is the activation's own for sigmoid and tanh (so histograms compare across layers and time), else
    the finite values' min and max (widened by 0.5 each way when they are equal).
    """
    values = as_units(output).reshape(-1)
    values = values[np.isfinite(values)]
    if activation in SATURATION_BOUNDS:
        lo, hi = SATURATION_BOUNDS[activation]
    elif values.size:
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = 0.0, 0.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
    return [lo, hi], [int(c) for c in counts]


# The cheap first pass of the symmetry check compares each unit's weights projected on this many random
# directions: equal rows have equal projections, and two different rows look alike on all 16 only by a
# chance of about 1e-8 (each direction keeps ~1/sqrt(fan_in) of their difference); such rare false
# candidates are then rejected by the exact test, so they cost time, never a wrong answer.
SYMMETRY_PROJECTIONS = 16
# Projections closer than this (relative) make a candidate pair: far above float32 rounding, far below the
# typical distance of two different rows' projections.
SYMMETRY_CANDIDATE_RTOL = 1e-3


def symmetric_units(
    kernel: torch.Tensor, bias: torch.Tensor | None = None, rtol: float = SYMMETRY_RTOL
) -> int:
    """The number of units whose incoming weights (kernel row and bias) equal those of another unit of the layer.

    Such units compute the same function and receive the same gradient, so training never tells them apart
    (the chapter: initialize all weights to one value and every neuron of a layer stays identical). Units
    ``i`` and ``j`` are symmetric when ``‖r_i - r_j‖ ≤ rtol · max(‖r_i‖, ‖r_j‖)``; all-zero rows are symmetric
    with each other. ``kernel`` is torch's ``(units, fan_in)``.
    """
    # In torch, not NumPy: NumPy's BLAS keeps a thread pool of its own, whose spinning threads would compete
    # with torch's for the CPU in the training steps that follow.
    rows = kernel.detach().double().reshape(kernel.shape[0], -1)
    if bias is not None:
        rows = torch.cat([rows, bias.detach().double().reshape(-1, 1)], dim=1)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    directions = torch.randn(rows.shape[1], SYMMETRY_PROJECTIONS, generator=generator, dtype=torch.float64)
    signatures = rows @ directions.to(rows.device)  # (units, 16): cheap for any fan-in
    candidates = _close_pairs(signatures, SYMMETRY_CANDIDATE_RTOL).any(dim=1)
    if not candidates.any():
        return 0
    # ‖r_i - r_j‖² from the Gram matrix in float64: exact enough to resolve rtol = 1e-6 (error ~1e-16 · ‖r‖²).
    return int(_close_pairs(rows[candidates], rtol).any(dim=1).sum().item())


def _close_pairs(rows: torch.Tensor, rtol: float) -> torch.Tensor:
    """``close[i, j]``: ``‖r_i - r_j‖ ≤ rtol · max(‖r_i‖, ‖r_j‖)`` for ``i ≠ j`` (NaN distances: never close)."""
    sq = (rows * rows).sum(dim=1)
    dist2 = (sq[:, None] + sq[None, :] - 2 * (rows @ rows.T)).clamp_min(0)
    close = dist2 <= (rtol * rtol) * torch.maximum(sq[:, None], sq[None, :])
    close.fill_diagonal_(False)
    return close


def json_number(value: float) -> float | str:
    """``value`` as JSON can hold it: non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``
    (strict JSON has no NaN; ``float()`` reads these strings back)."""
    return value if math.isfinite(value) else str(value)


def number(value: float | str | None) -> float | None:
    """A record's number back as a float (the inverse of :func:`json_number`); None stays None."""
    return None if value is None else float(value)


def _activation_stats(output: torch.Tensor, activation: str, margin: float, bins: int) -> dict[str, Any]:
    values = as_units(output)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    kept = values.reshape(-1) if all_finite else values[finite]
    stats: dict[str, Any] = {
        "units": int(values.shape[1]),
        # float64 accumulation: a float32 sum of 50,000 values would lose the mean's last digits
        "output_mean": json_number(float(kept.mean(dtype=np.float64)) if kept.size else math.nan),
        "output_std": json_number(float(kept.std(dtype=np.float64)) if kept.size else math.nan),
        "nonfinite_fraction": 0.0 if all_finite else float(1.0 - finite.mean()),
    }
    stats["hist_range"], stats["hist_counts"] = histogram(values, activation, bins)
    if activation in SATURATION_BOUNDS:
        stats["saturated_fraction"] = saturated_fraction(values, activation, margin)
    if activation in RELU_FAMILY:
        dead = dead_units(values)
        stats["dead_units"] = dead
        stats["dead_fraction"] = dead / stats["units"]
    return stats


def _sum_of_squares(tensor: torch.Tensor) -> float:
    # in float64: 300,000 float32 squares (a CIFAR-10 input layer) would lose digits
    return float(np.square(tensor.detach().float().cpu().numpy(), dtype=np.float64).sum())


def kernel_norms(layers: list[ProbedLayer]) -> list[float | str]:
    """‖w‖ of every probed kernel, as a probe records them (``weight_norm``): equal lists mean, in practice,
    unchanged weights."""
    return [
        json_number(math.sqrt(_sum_of_squares(layer.kernel))) for layer in layers if layer.kernel is not None
    ]


def _kernel_stats(layer: ProbedLayer, grad: torch.Tensor | None) -> dict[str, Any]:
    kernel = layer.kernel
    weight_sq = _sum_of_squares(kernel)
    weight_norm = math.sqrt(weight_sq)
    stats: dict[str, Any] = {
        "weight_norm": json_number(weight_norm),
        # fan_in · E[w²]: Klambauer et al.'s τ = Σ_i w_i² of a unit, averaged over the units. At initialization
        # 1 for LeCun, 2 for He, 2·fan_in/(fan_in + fan_out) for Glorot.
        "kernel_mean_square_x_fan_in": json_number(weight_sq / kernel.shape[0]),
        "symmetric_units": symmetric_units(layer.kernel, layer.bias),
        "trainable": bool(kernel.requires_grad),
    }
    grad_norm = (
        math.sqrt(_sum_of_squares(grad)) if grad is not None else 0.0
    )  # None: no influence on the loss
    stats["grad_norm"] = json_number(grad_norm)
    stats["grad_rms"] = json_number(grad_norm / math.sqrt(kernel.numel()))
    ratio = grad_norm / weight_norm if weight_norm > 0 else math.inf
    stats["grad_to_weight_ratio"] = json_number(ratio if math.isfinite(weight_norm) else math.nan)
    return stats


@contextmanager
def recording_outputs(layers: list[ProbedLayer]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each layer's output (by name) while the context is open; removed on exit."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.module.register_forward_hook(
            lambda module, args, out, name=layer.name: outputs.__setitem__(name, out.detach())
        )
        for layer in layers
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _no_side_effects(model: nn.Module) -> Iterator[None]:
    """Training mode for the probe, with the RNG, the buffers and the mode restored afterwards."""
    was_training = model.training
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(PROBE_SEED)
        try:
            model.train()
            yield
        finally:
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    buf.copy_(buffers[name])
            model.train(was_training)


def probe(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "sparse_categorical_crossentropy",
    moment: str = "probe",
    step: int = 0,
    epoch: int = 0,
    margin: float = SATURATION_MARGIN,
    bins: int = HISTOGRAM_BINS,
) -> dict[str, Any]:
    """One probe record of ``model`` on the batch ``(x, y)`` (see the module doc for its fields).

    The loss is the data loss only (no regularization penalty), computed from logits as in training.
    ``moment``, ``step`` and ``epoch`` label the record; ``margin`` is the saturation margin and ``bins`` the
    number of histogram bins.
    """
    layers = probed_layers(model)
    logits_model = split_output(model)[0] if isinstance(model, nn.Sequential) else model
    spec = LOSSES[loss]
    device = next(model.parameters()).device
    x = torch.as_tensor(x).to(device=device, dtype=torch.float32)
    y = torch.as_tensor(y).to(device=device, dtype=spec.label_dtype)
    # frozen kernels (transfer learning) have no gradient: they are recorded with a gradient norm of 0
    kernels = [layer.kernel for layer in layers if layer.kernel is not None and layer.kernel.requires_grad]
    with _no_side_effects(model), recording_outputs(layers) as outputs, torch.enable_grad():
        value = spec.fn(logits_model(x), y)
        grads = torch.autograd.grad(value, kernels, allow_unused=True) if kernels else ()
    by_kernel = {id(k): g for k, g in zip(kernels, grads, strict=True)}
    records = []
    for layer in layers:
        record: dict[str, Any] = {
            "name": layer.name,
            "kind": layer.kind,
            "activation": layer.activation,
            "output": layer.output,
        }
        record.update(_activation_stats(outputs[layer.name], layer.activation, margin, bins))
        if layer.kernel is not None:
            record.update(_kernel_stats(layer, by_kernel.get(id(layer.kernel))))
        records.append(record)
    input_std, input_mean = (v.item() for v in torch.std_mean(x, correction=0))  # one pass over the batch
    return {
        "record": "probe",
        "moment": moment,
        "step": int(step),
        "epoch": int(epoch),
        "probe_size": len(x),
        "loss": json_number(value.item()),
        "input": {"mean": json_number(input_mean), "std": json_number(input_std)},
        "layers": records,
    }


def probe_batch(
    x: Any, y: Any, size: int = PROBE_SIZE, seed: int = PROBE_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random sample of ``size`` examples of ``(x, y)`` (all of them when there are fewer).

    Random rather than the first ``size``: a training split may be stored class by class.
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if len(x) <= size:
        return x, y
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[index], y[index]


def kernel_snapshot(layers: list[ProbedLayer]) -> dict[str, torch.Tensor]:
    """A copy of every probed layer's kernel, by layer name: taken just before the step whose update is measured.

    ``layers`` is :func:`probed_layers` of the model (computed once by the caller, not at every step).
    """
    kernels = {layer.name: layer.kernel.detach() for layer in layers if layer.kernel is not None}
    # one multi-tensor copy rather than a copy per layer: this runs inside the training loop
    return dict(zip(kernels, torch._foreach_mul(list(kernels.values()), 1.0), strict=True))


def update_ratios(before: dict[str, torch.Tensor], layers: list[ProbedLayer]) -> dict[str, float | str]:
    """``‖w_after − w_before‖ / ‖w_before‖`` (Frobenius norms) per layer: the relative size of one update.

    Around 1e-3 is the usual sign of a healthy learning rate (Karpathy's rule of thumb, CS231n).
    """
    names = [layer.name for layer in layers if layer.name in before]
    after = [layer.kernel.detach() for layer in layers if layer.name in before]
    old = [before[name] for name in names]
    # multi-tensor norms and one transfer to the host for all layers: this runs inside the training loop
    changes = torch.stack(torch._foreach_norm(torch._foreach_sub(after, old))).double().tolist()
    norms = torch.stack(torch._foreach_norm(old)).double().tolist()
    return {
        name: json_number(change / norm if norm > 0 else math.inf)
        for name, change, norm in zip(names, changes, norms, strict=True)
    }


def update_record(
    before: dict[str, torch.Tensor], layers: list[ProbedLayer], step: int, epoch: int
) -> dict[str, Any]:
    """The record of one step's update (``step`` counts the steps taken, this one included)."""
    return {
        "record": "update",
        "step": int(step),
        "epoch": int(epoch),
        "layers": update_ratios(before, layers),
    }
