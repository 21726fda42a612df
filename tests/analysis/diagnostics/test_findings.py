"""Finding rules: each on a hand-made record (the threshold's edge) and on a net built to trigger it and one
built not to."""

from __future__ import annotations

import math

import pytest
import torch

from tests.analysis.diagnostics.nets import CHAOTIC, NORMAL_1, batch, build, dense_stack
from trainwell.analysis.diagnostics.findings import (
    LEAKY_STUCK_REMEDY,
    REMEDIES,
    Finding,
    dead_units,
    exploding_gradients,
    gradient_rms_ratio,
    judge,
    not_self_normalizing,
    saturation,
    symmetric_units,
    update_ratio_out_of_range,
    vanishing_gradients,
)
from trainwell.analysis.diagnostics.probes import probe
from trainwell.errors import ConfigError


def layer(name: str, **stats) -> dict:
    base = {"name": name, "kind": "dense", "activation": "relu", "units": 10, "output": False}
    return base | stats


def record(layers: list[dict], step: int = 0, **extra) -> dict:
    return {
        "record": "probe",
        "moment": "init",
        "step": step,
        "epoch": 0,
        "probe_size": 8,
        "loss": 1.0,
        "input": {"mean": 0.0, "std": 1.0},
        "layers": layers,
    } | extra


def grads(*rms: float) -> dict:
    hidden = [layer(f"dense_{i + 1}", grad_rms=g, grad_norm=g * 10) for i, g in enumerate(rms)]
    return record([*hidden, layer(f"dense_{len(rms) + 1}", grad_rms=1.0, grad_norm=1.0, output=True)])


def codes(spec: dict, *data) -> list[str]:
    return [f.code for f in judge([probe(build(spec), *(data or batch()))])]


# --- vanishing / exploding -------------------------------------------------------------------------------------


def test_gradient_ratio_is_first_over_last_hidden_rms():
    assert gradient_rms_ratio(grads(1e-5, 1e-4, 1e-3)) == pytest.approx(1e-2)  # the output layer is left out
    assert gradient_rms_ratio(grads(1.0)) is None  # one hidden layer: no ratio
    assert math.isnan(gradient_rms_ratio(grads(0.0, 0.0)))  # 0 / 0 says nothing


def test_vanishing_threshold_edge():
    assert vanishing_gradients(grads(0.9e-5, 1e-3)) is not None  # 10^-2.05
    assert vanishing_gradients(grads(1.1e-5, 1e-3)) is None  # 10^-1.96
    assert vanishing_gradients(grads(1.1e-5, 1e-3), min_orders=1) is not None
    found = vanishing_gradients(grads(1e-6, 1e-4, 1e-2))
    assert found.layers == ("dense_1", "dense_3") and "10^-4.0" in found.evidence


def test_exploding_threshold_edge_and_non_finite():
    assert exploding_gradients(grads(1.1e-1, 1e-3)) is not None
    assert exploding_gradients(grads(0.9e-1, 1e-3)) is None
    bad = grads(1.0, 1.0)
    bad["layers"][1]["grad_norm"] = "inf"
    found = exploding_gradients(bad)
    assert found.layers == ("dense_2",) and "non-finite" in found.evidence
    assert (
        exploding_gradients(record([layer("dense_1", grad_rms=1.0, grad_norm=1.0)], loss="nan")) is not None
    )


def test_vanishing_on_a_sigmoid_net_and_not_on_a_tanh_net():
    # sigmoid passes back at most 1/4 of the gradient per layer: with Glorot init it vanishes over 6 layers
    assert "vanishing_gradients" in codes(dense_stack("sigmoid", "glorot_uniform", 6))
    assert codes(dense_stack("tanh", "glorot_uniform", 6)) == []


def test_exploding_on_a_chaotic_tanh_net_and_not_on_a_glorot_one():
    assert "exploding_gradients" in codes(dense_stack("tanh", CHAOTIC, 30))
    assert "exploding_gradients" not in codes(dense_stack("tanh", "glorot_uniform", 30))


def test_exploding_on_a_diverged_net():
    model = build(dense_stack("relu", "he_normal", 2))
    with torch.no_grad():
        model.dense_2.linear.weight.fill_(math.nan)
    assert [f.code for f in judge([probe(model, *batch())])][0] == "exploding_gradients"


# --- saturation --------------------------------------------------------------------------------------------------


def test_saturation_threshold_edge():
    rec = record(
        [
            layer("dense_1", activation="sigmoid", saturated_fraction=0.21),
            layer("dense_2", activation="tanh", saturated_fraction=0.2),
        ]
    )
    found = saturation(rec)
    assert found.layers == ("dense_1",) and "21%" in found.evidence
    assert saturation(rec, max_saturated_fraction=0.5) is None


def test_saturation_with_normal_init_and_not_with_glorot():
    x, y = batch(scale=1.0)
    assert "saturation" in codes(dense_stack("sigmoid", NORMAL_1, 5), x, y)
    assert "saturation" in codes(dense_stack("tanh", NORMAL_1, 5), x, y)
    assert "saturation" not in codes(dense_stack("sigmoid", "glorot_uniform", 5), x, y)
    assert "saturation" not in codes(dense_stack("tanh", "glorot_uniform", 5), x, y)


# --- dead units --------------------------------------------------------------------------------------------------


def test_dead_units_threshold_edge_and_wording():
    rec = record(
        [
            layer("dense_1", dead_units=26, dead_fraction=0.26),
            layer("dense_2", dead_units=25, dead_fraction=0.25),
        ]
    )
    found = dead_units(rec)
    assert (
        found.layers == ("dense_1",) and "26/10" in found.evidence and found.remedy == REMEDIES["dead_units"]
    )
    leaky = record([layer("dense_1", activation="leaky_relu", dead_units=5, dead_fraction=0.5)])
    assert dead_units(leaky).remedy == LEAKY_STUCK_REMEDY
    assert "stuck on the negative side" in dead_units(leaky).evidence


def test_dead_units_with_a_negative_bias_and_not_without():
    # a bias of -10 puts every weighted sum below 0: every ReLU is dead, every leaky unit stuck negative
    assert "dead_units" in codes(dense_stack("relu", "he_normal", 3, bias=-10.0))
    assert "dead_units" in codes(dense_stack("leaky_relu", "he_normal", 3, bias=-10.0))
    assert "dead_units" not in codes(dense_stack("relu", "he_normal", 3))
    assert "dead_units" not in codes(dense_stack("elu", "he_normal", 3, bias=-10.0))  # ELU is not ReLU-family


# --- self-normalization -----------------------------------------------------------------------------------------


def selu_layer(name: str, mean: float, std: float, tau: float = 1.0) -> dict:
    return layer(name, activation="selu", output_mean=mean, output_std=std, kernel_mean_square_x_fan_in=tau)


def test_not_self_normalizing_tolerance_edges_and_preconditions():
    ok = record([selu_layer("dense_1", 0.19, 1.19), selu_layer("dense_2", -0.19, 0.81)])
    assert not_self_normalizing(ok) is None
    drift = record(
        [selu_layer("dense_1", 0.0, 1.0, tau=1.1), selu_layer("dense_2", 0.25, 1.0, tau=2.0)],
        input={"mean": 0.3, "std": 0.35},
    )
    found = not_self_normalizing(drift, broken_preconditions=["data.scaling: not standardized"])
    assert found.layers == ("dense_2",)
    assert "not standardized (mean 0.3, std 0.35" in found.evidence
    assert "1 of 2 SELU layers have kernels with τ = fan_in·E[w²] ≈ 2, outside [0.95, 1.1]" in found.evidence
    assert "he_normal 2" in found.evidence
    assert "data.scaling: not standardized" in found.evidence
    later = not_self_normalizing(dict(drift, step=100))
    assert "training has moved the weights out of it" in later.evidence
    assert "outside [0.9, 2.5]" not in later.evidence
    assert "τ" not in not_self_normalizing(drift, tau_domain=(0.9, 2.5)).evidence
    trained = record([selu_layer("dense_1", 0.6, 2.5), selu_layer("dense_2", 0.1, 1.3)], step=200)
    found = not_self_normalizing(trained)
    assert found.layers == ("dense_1", "dense_2")
    assert "through depth, std 2.5 (dense_1) to 1.3 (dense_2)" in found.evidence
    assert "no broken precondition is known: training has given the weights a structure" in found.evidence
    # only SELU nets are judged
    mixed = record([selu_layer("dense_1", 3.0, 9.0), layer("dense_2", activation="relu")])
    assert not_self_normalizing(mixed) is None


def test_not_self_normalizing_on_he_init_and_unscaled_input_and_not_on_lecun():
    x, y = batch()
    assert codes(dense_stack("selu", "lecun_normal", 30), x, y) == []
    he = judge([probe(build(dense_stack("selu", "he_normal", 30)), x, y)])
    assert [f.code for f in he] == ["not_self_normalizing"]
    assert "30 of 30 SELU layers have kernels with τ" in he[0].evidence
    # pixels / 255 look like mean 0.3, std 0.35: the first layers start far below std 1
    unscaled = judge([probe(build(dense_stack("selu", "lecun_normal", 30)), *batch(scale=0.35, shift=0.3))])
    assert [f.code for f in unscaled] == ["not_self_normalizing"]
    assert "dense_1" in unscaled[0].layers and "inputs are not standardized" in unscaled[0].evidence


# --- symmetric units ---------------------------------------------------------------------------------------------


def test_symmetric_units_with_a_constant_init_and_not_with_glorot():
    found = judge([probe(build(dense_stack("elu", {"name": "constant", "value": 0.1}, 2)), *batch())])
    sym = next(f for f in found if f.code == "symmetric_units")
    assert sym.layers == ("dense_1", "dense_2")  # the output layer keeps its Glorot default
    assert "dense_1 64/64" in sym.evidence
    assert "symmetric_units" not in codes(dense_stack("elu", "glorot_uniform", 2))
    assert symmetric_units(record([layer("dense_1", symmetric_units=1)])) is None


# --- updates ------------------------------------------------------------------------------------------------------


def updates(*ratios_per_step: dict) -> list[dict]:
    return [
        {"record": "update", "step": i + 1, "epoch": 0, "layers": r} for i, r in enumerate(ratios_per_step)
    ]


def test_update_ratio_uses_the_median_and_the_bounds():
    ups = updates({"a": 1e-3, "b": 5e-2}, {"a": 1.0, "b": 5e-2}, {"a": 2e-3, "b": 1e-6})
    found = update_ratio_out_of_range(ups)  # medians: a 2e-3 (one odd step does not decide), b 5e-2
    assert found.layers == ("b",) and "too large" in found.evidence and found.remedy.startswith("Lower")
    small = update_ratio_out_of_range(updates({"a": 1e-5}, {"a": 2e-5}))
    assert small.layers == ("a",) and small.remedy.startswith("Raise")
    assert update_ratio_out_of_range(updates({"a": 1e-5}), low=1e-6) is None
    assert update_ratio_out_of_range(updates({"a": "nan"})).layers == ("a",)
    assert update_ratio_out_of_range([]) is None


# --- judge -------------------------------------------------------------------------------------------------------


def test_judge_merges_first_and_last_probe_and_orders_by_code():
    first = record([layer("dense_1", dead_units=9, dead_fraction=0.9)])
    middle = record([layer("dense_1", activation="sigmoid", saturated_fraction=0.9)], step=5)
    last = record(
        [
            layer("dense_1", dead_units=8, dead_fraction=0.8),
            layer("dense_2", dead_units=5, dead_fraction=0.5),
        ],
        step=10,
    )
    found = judge([first, middle, last, *updates({"dense_1": 0.5})])
    assert [f.code for f in found] == ["dead_units", "update_ratio_out_of_range"]  # middle probe not judged
    assert found[0].layers == ("dense_1", "dense_2")
    assert found[0].evidence.startswith("at init: ") and "; after 10 steps: " in found[0].evidence
    assert found[0].to_dict() == {
        "code": "dead_units",
        "layers": ["dense_1", "dense_2"],
        "evidence": found[0].evidence,
        "remedy": REMEDIES["dead_units"],
    }


def test_judge_thresholds_and_their_errors():
    rec = record([layer("dense_1", dead_units=3, dead_fraction=0.3)])
    assert judge([rec], thresholds={"dead_units": {"max_dead_fraction": 0.5}}) == []
    with pytest.raises(ConfigError, match=r"unknown finding 'dead_unit' \(did you mean 'dead_units'\?\)"):
        judge([rec], thresholds={"dead_unit": {}})
    with pytest.raises(
        ConfigError,
        match=r"thresholds.dead_units: unknown threshold 'max'; dead_units has: "
        r"max_dead_fraction",
    ):
        judge([rec], thresholds={"dead_units": {"max": 0.5}})


def test_every_code_has_a_remedy():
    assert all(Finding(code, (), "x").remedy for code in REMEDIES)
