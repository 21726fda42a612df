"""Determinism: the same config and seed on the same machine give the same history and the same weights, bit
for bit, on the CPU, with the same number of threads (a thread count changes how sums are split up).

The suite runs one thread: on a shared two-core machine, two OpenMP threads per process can slow a run
twenty-fold when other processes compete for the cores (measured: 140 s instead of 9 s for this test). What
holds on a GPU is in the README's Reliability section.
"""

from __future__ import annotations

import torch

from tests.reliability.conftest import comparable, history_rows
from trainwell.cli import main


def checkpoint(run) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def test_same_config_same_seed_same_bits(tmp_path, config):
    runs = [tmp_path / name for name in ("a", "b", "other-seed")]
    for run, seed in zip(runs, (7, 7, 8), strict=True):
        assert main(["train", str(config), "--out", str(run), "--quiet", "--set", f"train.seed={seed}"]) == 0
    a, b, other = runs
    assert comparable(history_rows(a)) == comparable(history_rows(b))
    ca, cb = checkpoint(a), checkpoint(b)
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    # The comparison has power: another seed gives another history.
    assert comparable(history_rows(other)) != comparable(history_rows(a))
