"""Findings: pure rules that turn probe and update records into advice, each with the chapter's remedy.

Every rule is a function of plain records (see :mod:`trainwell.analysis.diagnostics.probes`) and keyword-only
thresholds with documented defaults; it returns a :class:`Finding` or None. :func:`judge` runs them all on a
run's records: the snapshot rules on the first and the last probe (at initialization and after training, where
most problems show), the update rule on every measured update.

=============================  ================================================================================
code                           what it means
=============================  ================================================================================
``vanishing_gradients``        the weight-gradient RMS falls by ``min_orders`` orders of magnitude from the
                               top hidden layer to the bottom one
``exploding_gradients``        it grows by ``min_orders`` orders of magnitude, or the loss or a gradient is
                               inf/NaN
``saturation``                 a sigmoid/tanh layer has more than ``max_saturated_fraction`` of its outputs
                               within 0.01 of the activation's bounds
``dead_units``                 a ReLU-family layer has more than ``max_dead_fraction`` of its units ≤ 0 on the
                               whole probe batch
``not_self_normalizing``       a SELU net's layer outputs drift from mean 0 / std 1
``update_ratio_out_of_range``  the median ‖Δw‖/‖w‖ of a layer's measured steps is outside [``low``, ``high``]
``symmetric_units``            units of a layer have identical incoming weights, so training cannot tell them
                               apart
=============================  ================================================================================
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainwell.analysis.diagnostics.probes import number
from trainwell.errors import ConfigError
from trainwell.registry import Registry, unknown_name_message

# The chapter's remedies (Géron, "Training Deep Neural Networks"), one per finding code.
REMEDIES: dict[str, str] = {
    "vanishing_gradients": (
        "Initialize for the activation (Glorot for none/tanh/sigmoid/softmax, He for ReLU and its variants, "
        "LeCun for SELU), use a non-saturating activation (ReLU variants, ELU, SELU) instead of sigmoid/tanh, "
        "or add Batch Normalization."
    ),
    "exploding_gradients": (
        "Clip the gradients (optimizer.clipnorm or clipvalue), lower the learning rate, initialize for the "
        "activation (He for ReLU variants, LeCun for SELU, Glorot otherwise), or add Batch Normalization."
    ),
    "saturation": (
        "The sigmoid/tanh units sit in their flat tails, where the gradient is almost 0. Use Glorot "
        "initialization instead of N(0, 1) (it keeps each layer's output variance equal to its input's), a "
        "non-saturating activation (ReLU variants, ELU, SELU), or Batch Normalization before the activation."
    ),
    "dead_units": (
        "Dying ReLUs: units whose weighted sum is negative for every input get no gradient and never come "
        "back. Use a leaky variant (leaky_relu with alpha = 0.2, rrelu, prelu) or ELU/SELU, lower the learning "
        "rate, and use He initialization."
    ),
    "not_self_normalizing": (
        "Self-normalization (Klambauer et al. 2017) holds only with standardized inputs (mean 0, std 1; "
        'data.scaling = "standardize"), LeCun normal initialization (kernel_initializer = "lecun_normal"), '
        "a plain sequential stack of dense layers, no l1/l2 regularization, max-norm or batch norm, and "
        "alpha_dropout instead of regular dropout."
    ),
    "update_ratio_out_of_range": (
        "A step should change a layer's weights by about 1e-3 of their norm (a rule of thumb from Karpathy's "
        "CS231n notes, not from the chapter). Much more: lower the learning rate or clip the gradients; much "
        "less: raise the learning rate (or look for vanishing gradients)."
    ),
    "symmetric_units": (
        "Units with identical incoming weights compute the same thing and get the same gradient, so "
        "backpropagation can never break the symmetry: initialize the weights randomly (Glorot, He or LeCun), "
        "never to one constant."
    ),
}


# dead_units in a net whose only ReLU-family units are leaky: they are not dead, so "use a leaky variant" is no help.
LEAKY_STUCK_REMEDY = (
    "Leaky units stuck on the negative side still get a gradient through their slope and often come back "
    "(probe again later); if they stay stuck, lower the learning rate, or use ELU/SELU, whose negative side "
    "saturates smoothly instead."
)


@dataclass(frozen=True)
class Finding:
    """One problem: a code, the layers concerned (bottom to top), the numbers that show it and the remedy."""

    code: str
    layers: tuple[str, ...]
    evidence: str
    remedy: str = field(default="")

    def __post_init__(self) -> None:
        if not self.remedy:
            object.__setattr__(self, "remedy", REMEDIES[self.code])

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "layers": list(self.layers),
            "evidence": self.evidence,
            "remedy": self.remedy,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def _hidden_dense(record: dict[str, Any]) -> list[dict[str, Any]]:
    # frozen layers have no gradient by design: they say nothing about vanishing or exploding
    return [
        layer
        for layer in record["layers"]
        if "grad_rms" in layer and not layer["output"] and layer.get("trainable", True)
    ]


def short_layer_list(names: Sequence[str], most: int = 6) -> str:
    """``dense_1, dense_2, dense_3, dense_4, dense_5, ... dense_12 (12 layers)``: long layer lists cut for
    people (a finding's ``layers`` keep them all)."""
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[: most - 1]) + f", ... {names[-1]} ({len(names)} layers)"


def gradient_rms_ratio(record: dict[str, Any]) -> float | None:
    """RMS of the first hidden layer's weight gradient over that of the last hidden layer (None with < 2).

    RMS (the gradient's norm per weight) rather than the norm, so that a wide input layer (3,072 weights per
    unit on CIFAR-10) does not look as if its gradient were larger only because it has more weights.
    """
    hidden = _hidden_dense(record)
    if len(hidden) < 2:
        return None
    first, last = number(hidden[0]["grad_rms"]), number(hidden[-1]["grad_rms"])
    if not (math.isfinite(first) and math.isfinite(last)):
        return math.nan
    if last == 0:
        return math.inf if first > 0 else math.nan
    return first / last


def _gradient_profile(hidden: list[dict[str, Any]], most: int = 6) -> str:
    step = max(1, math.ceil(len(hidden) / most))
    shown = hidden[::step] if hidden[::step][-1] is hidden[-1] else [*hidden[::step], hidden[-1]]
    return ", ".join(f"{layer['name']} {_fmt(number(layer['grad_rms']))}" for layer in shown)


def vanishing_gradients(record: dict[str, Any], *, min_orders: float = 2.0) -> Finding | None:
    """The weight-gradient RMS of the first (bottom) hidden layer is ≥ ``min_orders`` orders of magnitude
    below that of the last (top) hidden layer: the lower layers barely learn.

    Default 2 (a factor of 100): a healthy deep net keeps the ratio within about one order of magnitude
    (the chapter's 20-layer ELU/He baseline on CIFAR-10: about 1 at initialization).
    """
    ratio = gradient_rms_ratio(record)
    if ratio is None or not math.isfinite(ratio) or ratio > 10.0**-min_orders:
        return None
    return _gradient_ratio_finding("vanishing_gradients", record, ratio)


def _gradient_ratio_finding(name: str, record: dict[str, Any], ratio: float) -> Finding:
    """A vanishing or exploding finding from the bottom-to-top weight-gradient RMS ``ratio``."""
    hidden = _hidden_dense(record)
    return Finding(
        name,
        (hidden[0]["name"], hidden[-1]["name"]),
        f"weight-gradient RMS {hidden[0]['name']}/{hidden[-1]['name']} = {_fmt(ratio)} "
        f"(10^{math.log10(ratio):.1f}; bottom to top: {_gradient_profile(hidden)})",
    )


def exploding_gradients(record: dict[str, Any], *, min_orders: float = 2.0) -> Finding | None:
    """The loss or a weight gradient is inf/NaN, or the first hidden layer's weight-gradient RMS is
    ≥ ``min_orders`` orders of magnitude above the last hidden layer's (default 2, as for vanishing)."""
    kernels = [layer for layer in record["layers"] if "grad_norm" in layer]
    broken = [layer["name"] for layer in kernels if not math.isfinite(number(layer["grad_norm"]))]
    loss = number(record.get("loss"))
    if broken or (loss is not None and not math.isfinite(loss)):
        return Finding(
            "exploding_gradients",
            tuple(broken),
            f"loss {_fmt(loss)}; non-finite weight gradients in {short_layer_list(broken) or 'no layer'}",
        )
    ratio = gradient_rms_ratio(record)
    if ratio is None or not math.isfinite(ratio) or ratio < 10.0**min_orders:
        return None
    return _gradient_ratio_finding("exploding_gradients", record, ratio)


def saturation(record: dict[str, Any], *, max_saturated_fraction: float = 0.2) -> Finding | None:
    """A sigmoid or tanh layer (hidden or output) has more than ``max_saturated_fraction`` of its outputs on
    the probe batch within 0.01 of the activation's bounds.

    Default 0.2: with Glorot initialization a sigmoid/tanh layer has almost none (0 % in the preset), with
    the old N(0, 1) initialization about half of all outputs are saturated.
    """
    hits = [
        layer
        for layer in record["layers"]
        if layer.get("saturated_fraction") is not None
        and layer["saturated_fraction"] > max_saturated_fraction
    ]
    if not hits:
        return None
    detail = ", ".join(f"{layer['name']} {layer['saturated_fraction']:.0%}" for layer in hits[:6])
    more = f", ... ({len(hits)} layers)" if len(hits) > 6 else ""
    return Finding(
        "saturation",
        tuple(layer["name"] for layer in hits),
        f"share of outputs within 0.01 of the bounds: {detail}{more} (threshold {max_saturated_fraction:.0%})",
    )


def dead_units(record: dict[str, Any], *, max_dead_fraction: float = 0.25) -> Finding | None:
    """A ReLU-family layer has more than ``max_dead_fraction`` of its units ≤ 0 on every probe sample.

    Default 0.25: a few silent units are harmless, a quarter of a layer gone is a large share of its capacity
    (the chapter warns of "half of your network's neurons" dying with a large learning rate). For ReLU such
    units are dead (no gradient, no way back); for leaky_relu, rrelu and prelu they are stuck on the negative
    side, acting as linear units that learn only through the small slope.
    """
    hits = [
        layer
        for layer in record["layers"]
        if layer.get("dead_fraction") is not None and layer["dead_fraction"] > max_dead_fraction
    ]
    if not hits:
        return None
    detail = ", ".join(f"{layer['name']} {layer['dead_units']}/{layer['units']}" for layer in hits[:6])
    more = f", ... ({len(hits)} layers)" if len(hits) > 6 else ""
    total = sum(layer["dead_units"] for layer in hits)
    kinds = sorted({layer["activation"] for layer in hits})
    leaky_only = "relu" not in kinds
    what = "dead" if kinds == ["relu"] else "stuck on the negative side" if leaky_only else "dead or stuck"
    return Finding(
        "dead_units",
        tuple(layer["name"] for layer in hits),
        f"{', '.join(kinds)} units ≤ 0 on all {record.get('probe_size', '?')} probe samples ({what}): "
        f"{detail}{more}; {total} in all (threshold {max_dead_fraction:.0%} of a layer)",
        LEAKY_STUCK_REMEDY if leaky_only else "",
    )


def is_selu_net(record: dict[str, Any]) -> bool:
    """Whether every hidden activation of the recorded net is SELU (the nets self-normalization is about)."""
    acts = [
        layer["activation"]
        for layer in record["layers"]
        if not layer["output"] and layer["activation"] != "linear"
    ]
    return bool(acts) and all(a == "selu" for a in acts)


# The domain of τ = fan_in · E[w²] where Klambauer et al. (2017, Theorem 1) prove SELU's fixed point at mean 0 /
# variance 1 stable and attracting.
SELU_TAU_DOMAIN = (0.95, 1.1)


def measured_preconditions(
    record: dict[str, Any],
    *,
    mean_tolerance: float = 0.2,
    std_tolerance: float = 0.2,
    tau_domain: tuple[float, float] = SELU_TAU_DOMAIN,
) -> list[str]:
    """Preconditions of self-normalization that the record itself shows broken.

    - inputs not standardized: the probe batch's mean further than ``mean_tolerance`` from 0 or its std
      further than ``std_tolerance`` from 1;
    - kernels out of the theorem's domain: a SELU layer's τ = fan_in · E[w²] outside ``tau_domain`` (LeCun
      normal gives 1, He normal 2; after training, the weights may have moved out of it);
    - batch normalization in the net.
    """
    broken = []
    mean, std = number(record["input"]["mean"]), number(record["input"]["std"])
    if not (abs(mean) <= mean_tolerance and abs(std - 1) <= std_tolerance):
        broken.append(
            f"the inputs are not standardized (mean {_fmt(mean)}, std {_fmt(std)}; "
            'set data.scaling = "standardize")'
        )
    taus = [
        number(layer["kernel_mean_square_x_fan_in"])
        for layer in record["layers"]
        if layer["activation"] == "selu" and "kernel_mean_square_x_fan_in" in layer
    ]
    off = [tau for tau in taus if not tau_domain[0] <= tau <= tau_domain[1]]
    if off:
        typical = statistics.median(off)
        why = (
            "lecun_normal gives 1, he_normal 2"
            if record.get("step", 0) == 0
            else "training has moved the weights out of it"
        )
        broken.append(
            f"{len(off)} of {len(taus)} SELU layers have kernels with τ = fan_in·E[w²] ≈ {typical:.3g}, "
            f"outside [{tau_domain[0]:g}, {tau_domain[1]:g}] where the fixed point is proven "
            f"(Klambauer et al. 2017, Theorem 1; {why})"
        )
    bn = [layer["name"] for layer in record["layers"] if layer["kind"] == "batch_normalization"]
    if bn:
        broken.append(f"the net has batch normalization ({short_layer_list(bn)})")
    return broken


def not_self_normalizing(
    record: dict[str, Any],
    *,
    mean_tolerance: float = 0.2,
    std_tolerance: float = 0.2,
    tau_domain: tuple[float, float] = SELU_TAU_DOMAIN,
    broken_preconditions: Sequence[str] = (),
) -> Finding | None:
    """In a SELU net, hidden SELU layers whose outputs have a mean further than ``mean_tolerance`` from 0 or
    a std further than ``std_tolerance`` from 1 on the probe batch.

    Defaults 0.2 / 0.2: 100 SELU layers of 100 units with LeCun normal on standardized Fashion-MNIST stay
    within mean ±0.08 and std 0.90–1.01 (finite width makes them wander a little); with He initialization
    the std reaches 160, with unscaled inputs the first layers start at std 0.53. The finding names the
    preconditions the record shows broken (:func:`measured_preconditions`) and any in
    ``broken_preconditions`` (from the config, e.g. :mod:`trainwell.nn.selfnorm`).
    """
    if not is_selu_net(record):
        return None
    selu = [layer for layer in record["layers"] if layer["activation"] == "selu" and not layer["output"]]
    off = [
        layer
        for layer in selu
        if not (
            abs(number(layer["output_mean"])) <= mean_tolerance
            and abs(number(layer["output_std"]) - 1) <= std_tolerance
        )
    ]
    if not off:
        return None
    worst = max(
        off, key=lambda layer: max(abs(number(layer["output_mean"])), abs(number(layer["output_std"]) - 1))
    )
    causes = [
        *measured_preconditions(
            record, mean_tolerance=mean_tolerance, std_tolerance=std_tolerance, tau_domain=tau_domain
        ),
        *broken_preconditions,
    ]
    if causes:
        why = "; broken precondition: " + "; ".join(causes)
    elif record.get("step", 0) > 0:
        # Klambauer et al.'s fixed point assumes weights independent of the inputs; trained weights are not.
        why = (
            "; no broken precondition is known: training has given the weights a structure (aligned with "
            "the inputs) that the fixed-point theorem, made for random weights, does not cover"
        )
    else:
        why = "; no broken precondition is known"
    first, last = selu[0], selu[-1]
    return Finding(
        "not_self_normalizing",
        tuple(layer["name"] for layer in off),
        f"{len(off)} of {len(selu)} SELU layers outside mean 0 ± {mean_tolerance:g} / std 1 ± "
        f"{std_tolerance:g}; worst {worst['name']}: mean {_fmt(number(worst['output_mean']))}, std "
        f"{_fmt(number(worst['output_std']))}; through depth, std {_fmt(number(first['output_std']))} "
        f"({first['name']}) to {_fmt(number(last['output_std']))} ({last['name']}){why}",
    )


def symmetric_units(record: dict[str, Any], *, min_units: int = 2) -> Finding | None:
    """A layer has at least ``min_units`` units whose incoming weights (and bias) equal another unit's.

    Default 2: a single identical pair already means two units that can never learn different things.
    """
    hits = [layer for layer in record["layers"] if layer.get("symmetric_units", 0) >= min_units]
    if not hits:
        return None
    detail = ", ".join(f"{layer['name']} {layer['symmetric_units']}/{layer['units']}" for layer in hits[:6])
    more = f", ... ({len(hits)} layers)" if len(hits) > 6 else ""
    return Finding(
        "symmetric_units",
        tuple(layer["name"] for layer in hits),
        f"units sharing their incoming weights with another unit: {detail}{more}",
    )


def median_update_ratios(updates: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per layer, the median ‖Δw‖/‖w‖ over the update records (NaN counts as larger than any number)."""
    per_layer: dict[str, list[float]] = {}
    for record in updates:
        for name, value in record["layers"].items():
            v = number(value)
            per_layer.setdefault(name, []).append(math.inf if math.isnan(v) else v)
    return {name: statistics.median(values) for name, values in per_layer.items()}


def update_ratio_out_of_range(
    updates: Sequence[dict[str, Any]], *, low: float = 1e-4, high: float = 1e-2
) -> Finding | None:
    """Layers whose median ‖Δw‖/‖w‖ over the measured steps is below ``low`` or above ``high``.

    Defaults: one order of magnitude either side of the healthy 1e-3. The median, so that one odd step
    (Adam's first, the step after a plateau) does not decide.
    """
    medians = median_update_ratios(updates)
    if not medians:
        return None
    small = [(n, v) for n, v in medians.items() if v < low]
    large = [(n, v) for n, v in medians.items() if v > high]
    if not small and not large:
        return None
    parts = []
    if large:
        parts.append(f"too large (> {high:g}): " + ", ".join(f"{n} {_fmt(v)}" for n, v in large[:6]))
    if small:
        parts.append(f"too small (< {low:g}): " + ", ".join(f"{n} {_fmt(v)}" for n, v in small[:6]))
    direction = ("Lower the learning rate or clip the gradients. " if large else "") + (
        "Raise the learning rate, or look for vanishing gradients. " if small else ""
    )
    return Finding(
        "update_ratio_out_of_range",
        tuple(n for n in medians if n in dict(small + large)),
        f"median ‖Δw‖/‖w‖ over {len(updates)} measured steps " + "; ".join(parts) + " (healthy ≈ 1e-3)",
        direction + REMEDIES["update_ratio_out_of_range"],
    )


SnapshotRule = Callable[..., Finding | None]

# The rules judged on one probe record, in the order findings are listed.
SNAPSHOT_RULES: Registry[SnapshotRule] = Registry(
    "finding",
    {
        "vanishing_gradients": vanishing_gradients,
        "exploding_gradients": exploding_gradients,
        "saturation": saturation,
        "dead_units": dead_units,
        "not_self_normalizing": not_self_normalizing,
        "symmetric_units": symmetric_units,
    },
)
FINDING_CODES = (
    "vanishing_gradients",
    "exploding_gradients",
    "saturation",
    "dead_units",
    "not_self_normalizing",
    "update_ratio_out_of_range",
    "symmetric_units",
)
_RULES: dict[str, Callable[..., Finding | None]] = {
    **{code: SNAPSHOT_RULES[code] for code in SNAPSHOT_RULES},
    "update_ratio_out_of_range": update_ratio_out_of_range,
}


def check_thresholds(thresholds: dict[str, dict[str, Any]]) -> None:
    """Raise a :class:`ConfigError` naming the rule or threshold that does not exist."""
    for code, values in thresholds.items():
        if code not in _RULES:
            raise ConfigError(unknown_name_message("finding", code, list(_RULES)))
        params = [
            p.name
            for p in inspect.signature(_RULES[code]).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "broken_preconditions"
        ]
        for key in values:
            if key not in params:
                raise ConfigError(
                    f"thresholds.{code}: unknown threshold {key!r}; {code} has: {', '.join(params)}"
                )


def moment_label(record: dict[str, Any]) -> str:
    """``"at init"``, ``"after 3 epochs (600 steps)"``, ``"after 100 steps"``: when a record was taken."""
    if record.get("step", 0) == 0:
        return "at init"
    epochs = record.get("epoch", 0)
    if epochs and record.get("moment") in ("epoch", "end"):
        return f"after {epochs} epoch{'s' if epochs > 1 else ''} ({record['step']} steps)"
    return f"after {record['step']} step{'s' if record['step'] > 1 else ''}"


def judge(
    records: Sequence[dict[str, Any]],
    *,
    thresholds: dict[str, dict[str, Any]] | None = None,
    broken_preconditions: Sequence[str] = (),
) -> list[Finding]:
    """All findings in ``records`` (probe and update records, in the order they were taken).

    The snapshot rules judge the first and the last probe record; a code found in both gives one finding
    whose evidence says what each showed. ``thresholds`` overrides rule thresholds by code, e.g.
    ``{"dead_units": {"max_dead_fraction": 0.5}}``; ``broken_preconditions`` go to ``not_self_normalizing``.
    """
    thresholds = thresholds or {}
    check_thresholds(thresholds)
    probes = [r for r in records if r["record"] == "probe"]
    judged = probes[:1] + probes[-1:] if len(probes) > 1 else probes
    order = [layer["name"] for layer in probes[0]["layers"]] if probes else []  # bottom to top
    found: dict[str, list[tuple[str, Finding]]] = {}
    for record in judged:
        for code in SNAPSHOT_RULES:
            kwargs = dict(thresholds.get(code, {}))
            if code == "not_self_normalizing":
                kwargs["broken_preconditions"] = broken_preconditions
            finding = SNAPSHOT_RULES[code](record, **kwargs)
            if finding is not None:
                found.setdefault(code, []).append((moment_label(record), finding))
    updates = [r for r in records if r["record"] == "update"]
    update_finding = update_ratio_out_of_range(updates, **thresholds.get("update_ratio_out_of_range", {}))
    if update_finding is not None:
        found["update_ratio_out_of_range"] = [("", update_finding)]
    merged = []
    for code in FINDING_CODES:
        if code not in found:
            continue
        items = found[code]
        found_in = {name for _, f in items for name in f.layers}
        layers = tuple(name for name in order if name in found_in) + tuple(sorted(found_in - set(order)))
        evidence = "; ".join(f"{moment}: {f.evidence}" if moment else f.evidence for moment, f in items)
        merged.append(Finding(code, layers, evidence, items[-1][1].remedy))
    return merged
