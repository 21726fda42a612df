"""The latency helper: its statistics on scripted clocks, and interleaved timing of several models."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from trainwell.analysis.latency import compare_latency, measure_latency, summarize_times
from trainwell.errors import ConfigError


def scripted_clock(durations: list[float]):
    """A clock whose successive start/stop readings are ``durations`` apart (and 1 s between runs)."""
    readings, now = [], 0.0
    for d in durations:
        readings += [now, now + d]
        now += d + 1.0
    it = iter(readings)
    return lambda: next(it)


def test_median_and_deciles_of_scripted_runs():
    durations = [0.003, 0.001, 0.002, 0.010, 0.004]  # seconds, one slow outlier
    result = measure_latency(nn.Identity(), (3,), 1, runs=5, warmup=0, clock=scripted_clock(durations))
    assert result.median_ms == pytest.approx(3.0)  # by hand: sorted 1, 2, 3, 4, 10 ms
    ms = [d * 1e3 for d in durations]
    deciles = statistics.quantiles(ms, n=10)
    assert (result.p10_ms, result.p90_ms) == (pytest.approx(deciles[0]), pytest.approx(deciles[-1]))
    assert result.runs == 5 and result.batch_size == 1
    one = summarize_times([0.002], 8, 1)
    assert one.median_ms == one.p10_ms == one.p90_ms == pytest.approx(2.0)


class Recorder(nn.Module):
    def __init__(self, name: str, calls: list[str]):
        super().__init__()
        self.name, self.calls = name, calls
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.name)
        return x


def test_models_are_timed_in_turns_on_the_same_batch_and_left_as_they_were():
    calls: list[str] = []
    a, b = Recorder("a", calls), Recorder("b", calls).train()
    a.eval()
    results = compare_latency({"a": a, "b": b}, (2, 3), 4, runs=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up each, then interleaved runs
    assert set(results) == {"a", "b"} and all(r.runs == 3 and r.batch_size == 4 for r in results.values())
    assert not a.training and b.training  # train/eval flags restored


def test_bad_arguments_are_errors():
    with pytest.raises(ConfigError, match="runs and batch_size must be ≥ 1"):
        measure_latency(nn.Identity(), (3,), 1, runs=0)
