"""Small measurements the question studies share: sub-run configs from the base, probe records read back,
epochs to a target, and the noise level of an accuracy difference.

Pure functions of plain data (config dicts, diagnostics records, history rows), tested alone.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from trainwell.config import merge
from trainwell.experiments.studies.nets import Layers

# Two standard errors: about 95 % two-sided coverage for a normal estimate (as the report's answers use).
NOISE_Z = 2.0


def with_layers(base: dict[str, Any], layers: Layers, **tables: dict[str, Any]) -> dict[str, Any]:
    """The config ``base`` with ``model.layers`` replaced by ``layers`` and each of ``tables`` (e.g.
    ``train={"epochs": 3}``) merged on, as a variant's ``set`` is."""
    data = merge(copy.deepcopy(base), {"model": {"layers": copy.deepcopy(layers)}})
    for key, table in tables.items():
        data = merge(data, {key: table})
    return data


def probes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The probe records of a diagnostics log, in the order they were taken."""
    return [r for r in records if r.get("record") == "probe"]


def hidden_layers(probe: dict[str, Any]) -> list[dict[str, Any]]:
    """The hidden dense layers of a probe record (every dense layer but the output), bottom to top."""
    return [layer for layer in probe["layers"] if layer.get("kind") == "dense" and not layer.get("output")]


def kernel_norm(probe: dict[str, Any]) -> float:
    """‖θ‖ of all the probed kernels together: ``sqrt(Σ_layers weight_norm²)`` (biases left out)."""
    return math.sqrt(
        sum(float(layer["weight_norm"]) ** 2 for layer in probe["layers"] if "weight_norm" in layer)
    )


def normalization_drift(probe: dict[str, Any]) -> float:
    """How far the hidden layers' outputs are from mean 0 / std 1, the self-normalizing fixed point:
    ``max over hidden layers of |mean| + |ln std|`` (0 at the fixed point; inf for a layer with std 0).

    The log makes a std of 2 and of 1/2 equally far from 1, as a gain that doubles or halves per layer is
    equally bad through depth.
    """
    worst = 0.0
    for layer in hidden_layers(probe):
        mean, std = float(layer["output_mean"]), float(layer["output_std"])
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            return math.inf
        worst = max(worst, abs(mean) + abs(math.log(std)))
    return worst


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose value is ≥ ``target``, or None when none is."""
    return next((i + 1 for i, x in enumerate(curve) if x >= target), None)


def seconds_to_epoch(history: list[dict[str, float]], epoch: int | None) -> float | None:
    """Wall-clock training seconds from the start to the end of ``epoch`` (1-based), from history rows."""
    if epoch is None:
        return None
    return sum(float(row.get("seconds", 0.0)) for row in history[:epoch])


def curve_of(history: list[dict[str, float]], key: str = "val_accuracy") -> list[float]:
    """Column ``key`` of history rows."""
    return [float(row[key]) for row in history]


def convergence(
    a: list[dict[str, float]], b: list[dict[str, float]], target: float | None = None
) -> tuple[float, tuple[int | None, int | None], tuple[float | None, float | None]]:
    """The validation accuracy ``target`` (default: the lower of the two runs' best, which both reach), and
    the epochs and training seconds each run of history ``a`` and ``b`` took to first reach it."""
    if target is None:
        target = min(max(curve_of(a)), max(curve_of(b)))
    ea, eb = epochs_to_reach(curve_of(a), target), epochs_to_reach(curve_of(b), target)
    return target, (ea, eb), (seconds_to_epoch(a, ea), seconds_to_epoch(b, eb))


def binomial_noise(p: float, q: float, n: int) -> float:
    """The standard error of the difference of two accuracies ``p`` and ``q`` measured on ``n`` examples each:
    ``sqrt(p (1 − p) / n + q (1 − q) / n)`` — the sampling noise of the measurement alone, a lower bound on
    the noise between two trainings."""
    if n <= 0:
        raise ValueError(f"n must be ≥ 1, got {n}")
    return math.sqrt(p * (1 - p) / n + q * (1 - q) / n)


def seed_noise(a: list[float], b: list[float]) -> float | None:
    """The standard error of ``mean(a) − mean(b)`` from the spread over seeds (Welch), or None with fewer
    than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None

    def var(xs: list[float]) -> float:
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    return math.sqrt(var(a) / len(a) + var(b) / len(b))


def pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def overall(claims: list[bool | None]) -> bool | None:
    """Whether a measurement agrees with the chapter, from its claims (True: shown, False: contradicted,
    None: not settled by this run): False when any is contradicted, True when all are shown, else None."""
    if any(c is False for c in claims):
        return False
    return True if claims and all(c is True for c in claims) else None


CLAIM_WORDS = {True: "shown", False: "contradicted", None: "not settled"}
