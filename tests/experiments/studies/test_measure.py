"""The question studies' shared measurements, on hand-made records with hand-computed answers."""

from __future__ import annotations

import math
import statistics

import pytest

from trainwell.experiments.studies.measure import (
    binomial_noise,
    convergence,
    epochs_to_reach,
    hidden_layers,
    kernel_norm,
    normalization_drift,
    overall,
    seconds_to_epoch,
    seed_noise,
    with_layers,
)


def probe(*layers: tuple[float, float, float]) -> dict:
    """A probe record of hidden layers (mean, std, weight_norm) and an output layer."""
    hidden = [
        {
            "name": f"dense_{i}",
            "kind": "dense",
            "output": False,
            "output_mean": m,
            "output_std": s,
            "weight_norm": w,
        }
        for i, (m, s, w) in enumerate(layers, 1)
    ]
    out = {
        "name": "out",
        "kind": "dense",
        "output": True,
        "output_mean": 9.0,
        "output_std": 9.0,
        "weight_norm": 2.0,
    }
    return {"record": "probe", "layers": [*hidden, {"name": "act", "kind": "activation"}, out]}


def test_hidden_layers_leave_out_the_output_and_other_kinds():
    assert [layer["name"] for layer in hidden_layers(probe((0, 1, 1), (0, 1, 1)))] == ["dense_1", "dense_2"]


def test_normalization_drift_is_the_worst_abs_mean_plus_abs_log_std():
    # layer 1: |0.1| + |ln 2| = 0.7931; layer 2: |-0.3| + |ln 0.5| = 0.9931 (the output layer is ignored)
    assert normalization_drift(probe((0.1, 2.0, 1), (-0.3, 0.5, 1))) == pytest.approx(0.3 + math.log(2))
    assert normalization_drift(probe((0.0, 1.0, 1))) == 0.0
    assert normalization_drift(probe((0.0, 0.0, 1))) == math.inf


def test_kernel_norm_is_the_norm_of_all_kernels_together():
    # sqrt(3² + 4² + 2²) with the output's 2
    assert kernel_norm(probe((0, 1, 3.0), (0, 1, 4.0))) == pytest.approx(math.sqrt(29))


def test_epochs_and_seconds_to_a_target():
    history = [{"val_accuracy": a, "seconds": 2.0} for a in (0.5, 0.7, 0.69, 0.8)]
    assert epochs_to_reach([0.5, 0.7, 0.69, 0.8], 0.7) == 2
    assert epochs_to_reach([0.5], 0.7) is None
    assert seconds_to_epoch(history, 3) == 6.0
    other = [{"val_accuracy": a, "seconds": 1.0} for a in (0.6, 0.75)]
    # the lower best is 0.75: the first run reaches it at epoch 4 (8 s), the second at epoch 2 (2 s)
    assert convergence(history, other) == (0.75, (4, 2), (8.0, 2.0))
    assert convergence(history, other, target=0.9) == (0.9, (None, None), (None, None))


def test_binomial_noise_matches_the_formula():
    assert binomial_noise(0.8, 0.9, 1000) == pytest.approx(math.sqrt(0.8 * 0.2 / 1000 + 0.9 * 0.1 / 1000))
    with pytest.raises(ValueError, match="n must be"):
        binomial_noise(0.5, 0.5, 0)


def test_seed_noise_is_welch_standard_error():
    a, b = [0.80, 0.82, 0.81], [0.79, 0.83]
    expected = math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 2)
    assert seed_noise(a, b) == pytest.approx(expected)
    assert seed_noise([0.8], b) is None


def test_overall_agreement():
    assert overall([True, True]) is True
    assert overall([True, None]) is None
    assert overall([True, None, False]) is False
    assert overall([]) is None


def test_with_layers_replaces_the_layers_and_merges_tables():
    base = {"model": {"layers": [{"type": "flatten"}], "x": 1}, "train": {"epochs": 3, "seed": 1}}
    data = with_layers(base, [{"type": "dense", "units": 2}], train={"seed": 7})
    assert data["model"] == {"layers": [{"type": "dense", "units": 2}], "x": 1}
    assert data["train"] == {"epochs": 3, "seed": 7}
    assert base["train"]["seed"] == 1  # the base is not changed
