"""Inference latency: the median wall time of one forward pass at a given batch size, over many runs.

Latency on a shared CPU is noisy, so each number is the median of ``runs`` timed forward passes after
``warmup`` untimed ones (the first calls pay for allocation and dispatch caches), reported with the 10th and
90th percentiles so the spread is visible. Inputs are random float32 tensors of the model's per-sample shape
(the values do not change the work a dense net does). Numbers are measured and printed, never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trainwell.errors import ConfigError

# Enough runs that the median is stable to a few percent on an idle core, few enough to take seconds.
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
BATCH_SIZES = (1, 1024)  # one request at a time, and a large offline batch


@dataclass(frozen=True)
class Latency:
    """One measurement: milliseconds per forward pass of ``batch_size`` samples."""

    batch_size: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    threads: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_times(seconds: list[float], batch_size: int, threads: int) -> Latency:
    """Median and 10th/90th percentiles (``statistics.quantiles``, exclusive method) of per-run times."""
    if not seconds:
        raise ValueError("no timed runs to summarize")
    ms = [s * 1e3 for s in seconds]
    deciles = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
    return Latency(batch_size, statistics.median(ms), deciles[0], deciles[-1], len(ms), threads)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    *,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> Latency:
    """Time ``runs`` forward passes of ``model`` (in inference mode) on a random batch of ``batch_size``."""
    return compare_latency(
        {"model": model}, input_shape, batch_size, runs=runs, warmup=warmup, seed=seed, clock=clock
    )["model"]


@torch.inference_mode()
def compare_latency(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int,
    *,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Latency]:
    """The latency of each model on the same random batch, the models' runs interleaved (run 1 of each, then
    run 2 of each, ...) so that a change of load on a shared machine affects them all alike."""
    if runs < 1 or batch_size < 1:
        raise ConfigError(f"runs and batch_size must be ≥ 1, got runs={runs}, batch_size={batch_size}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size, *input_shape), generator=generator)
    flags = {name: m.training for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        inputs = {}
        for name, model in models.items():
            model.eval()
            inputs[name] = x.to(next(iter(model.parameters()), x).device)
            for _ in range(warmup):
                model(inputs[name])
        for _ in range(runs):
            for name, model in models.items():
                start = clock()
                model(inputs[name])
                if inputs[name].is_cuda:
                    torch.cuda.synchronize()
                times[name].append(clock() - start)
    finally:
        for name, model in models.items():
            model.train(flags[name])
    threads = torch.get_num_threads()
    return {name: summarize_times(t, batch_size, threads) for name, t in times.items()}


def latency_rows(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    *,
    runs: int = DEFAULT_RUNS,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """One record per batch size and model (see :func:`compare_latency`), with torch using ``threads``
    CPU threads (default: as it is); one thread gives steadier numbers on a busy machine."""
    rows = []
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        for batch_size in batch_sizes:
            for name, latency in compare_latency(models, input_shape, batch_size, runs=runs).items():
                rows.append({"model": name, **latency.as_dict()})
    finally:
        torch.set_num_threads(before)
    return rows
