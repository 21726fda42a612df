"""Probes: each statistic against a hand computation on a tiny tensor, and the probe against plain autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.analysis.diagnostics.nets import WIDTH, batch, build, dense_stack
from trainwell.analysis.diagnostics.findings import judge
from trainwell.analysis.diagnostics.probes import (
    SATURATION_BOUNDS,
    dead_units,
    histogram,
    json_number,
    kernel_snapshot,
    number,
    probe,
    probe_batch,
    probed_layers,
    saturated_fraction,
    symmetric_units,
    update_ratios,
)
from trainwell.nn.activations import SATURATING
from trainwell.nn.build import build_model, split_output


def test_saturation_bounds_cover_exactly_the_saturating_family():
    assert set(SATURATION_BOUNDS) == set(SATURATING)


def test_saturated_fraction_by_hand():
    # within 0.01 of 0 or 1: 0.005 and 0.995 are; 0.99 and 0.011 are not (strictly within).
    sig = torch.tensor([0.005, 0.5, 0.995, 0.99, 0.011])
    assert saturated_fraction(sig, "sigmoid") == pytest.approx(2 / 5)
    tanh = torch.tensor([[-0.995, 0.0], [0.992, -0.98]])
    assert saturated_fraction(tanh, "tanh") == pytest.approx(2 / 4)
    assert saturated_fraction(sig, "sigmoid", margin=0.02) == pytest.approx(4 / 5)


def test_dead_units_by_hand():
    out = torch.tensor(
        [
            [0.0, 1.0, -0.2, 0.0],
            [0.0, 0.0, -0.1, 0.3],
            [0.0, 2.0, -0.3, 0.0],
        ]
    )
    # unit 0: 0 everywhere (a dead ReLU); unit 2: negative everywhere (a stuck leaky unit); units 1, 3 fire
    assert dead_units(out) == 2
    # any leading axes count as samples: (2, 3, units) is 6 samples per unit
    seq = torch.zeros(2, 3, 2)
    seq[1, 2, 1] = 0.5
    assert dead_units(seq) == 1


def test_histogram_matches_numpy():
    values = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.74, 1.0])
    rng, counts = histogram(values, "sigmoid", bins=4)
    assert rng == [0.0, 1.0]
    assert counts == np.histogram(values.numpy(), bins=4, range=(0, 1))[0].tolist() == [2, 1, 2, 1]
    # unbounded activations: the data's range; non-finite values are left out
    rng, counts = histogram(torch.tensor([-2.0, 0.0, 2.0, math.inf, math.nan]), "elu", bins=2)
    assert rng == [-2.0, 2.0] and counts == [1, 2]
    # a constant output gets a range of width 1 around it
    assert histogram(torch.full((5,), 3.0), "relu", bins=2) == ([2.5, 3.5], [0, 5])


def test_symmetric_units_by_hand():
    kernel = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
    assert symmetric_units(kernel) == 2
    assert symmetric_units(kernel, torch.tensor([0.0, 1.0, 0.0])) == 0  # the bias tells units 0 and 1 apart
    assert symmetric_units(torch.zeros(3, 4)) == 3
    assert (
        symmetric_units(kernel + torch.tensor([[0.0, 1e-7], [0.0, 0.0], [0.0, 0.0]])) == 2
    )  # float rounding
    assert symmetric_units(kernel + torch.tensor([[0.0, 1e-3], [0.0, 0.0], [0.0, 0.0]])) == 0


def test_update_ratio_by_hand():
    model = build_model({"layers": [{"type": "dense", "units": 1, "activation": "softmax"}]}, (2,))
    layers = probed_layers(model)
    with torch.no_grad():
        model[0].linear.weight.copy_(torch.tensor([[3.0, 4.0]]))
    before = kernel_snapshot(layers)
    with torch.no_grad():
        model[0].linear.weight.copy_(torch.tensor([[3.0, 4.5]]))
    assert update_ratios(before, layers) == {"dense_1": pytest.approx(0.5 / 5.0)}


def test_probed_layers_names_kinds_and_output():
    model = build_model(
        {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 8, "kernel_initializer": "he_normal"},
                {"type": "batch_norm"},
                {"type": "leaky_relu"},
                {"type": "dropout", "rate": 0.5},
                {"type": "dense", "units": 8, "activation": "tanh"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        (2, 2),
    )
    got = [(layer.name, layer.kind, layer.activation, layer.output) for layer in probed_layers(model)]
    assert got == [
        ("dense_1", "dense", "linear", False),
        ("batch_normalization_1", "batch_normalization", "linear", False),
        ("activation_1", "activation", "leaky_relu", False),
        ("dense_2", "dense", "tanh", False),
        ("dense_3", "dense", "linear", True),  # the softmax is split off as its own module
    ]


def test_probe_matches_plain_autograd_and_forward():
    model = build(dense_stack("elu", "he_normal", 3))
    x, y = batch(64)
    record = probe(model, x, y)
    logits_model, _ = split_output(model)
    outputs = {}
    h = x
    for name, child in logits_model.named_children():
        h = child(h)
        outputs[name] = h.detach()
    loss = F.cross_entropy(h, y)
    loss.backward()
    assert record["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert record["input"] == {
        "mean": pytest.approx(x.mean().item(), abs=1e-6),
        "std": pytest.approx(x.std(unbiased=False).item(), rel=1e-6),
    }
    for layer in record["layers"]:
        module = getattr(model, layer["name"])
        w, g, out = module.linear.weight, module.linear.weight.grad, outputs[layer["name"]]
        assert layer["output_mean"] == pytest.approx(out.mean().item(), abs=1e-6)
        assert layer["output_std"] == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)
        assert layer["weight_norm"] == pytest.approx(w.norm().item(), rel=1e-6)
        assert layer["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-5)
        assert layer["grad_rms"] == pytest.approx(g.norm().item() / math.sqrt(w.numel()), rel=1e-5)
        assert layer["grad_to_weight_ratio"] == pytest.approx(g.norm().item() / w.norm().item(), rel=1e-5)
        assert layer["kernel_mean_square_x_fan_in"] == pytest.approx(
            (w**2).sum().item() / w.shape[0], rel=1e-5
        )
        assert sum(layer["hist_counts"]) == out.numel()
        assert "dead_units" not in layer and "saturated_fraction" not in layer  # ELU is neither family


def test_probe_has_no_side_effects():
    spec = {
        "layers": [
            {"type": "dense", "units": 16, "kernel_initializer": "he_normal"},
            {"type": "batch_norm"},
            {"type": "relu"},
            {"type": "dropout", "rate": 0.5},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    model = build(spec).eval()
    x, y = batch(32)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = probe(model, x, y)
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked RNG
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())  # BN statistics restored
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert probe(model, x, y) == first  # seeded dropout: the same weights give the same record


def test_kernel_mean_square_x_fan_in_tells_lecun_from_he():
    # fan_in · E[w²] is 1 for LeCun and 2 for He: with 256 × 1024 weights the estimate's relative standard
    # error is sqrt(2 / 262144) ≈ 0.003, so a tolerance of 0.03 has ample power and catches a √2 gain error.
    for init, expected in (("lecun_normal", 1.0), ("he_normal", 2.0)):
        torch.manual_seed(0)
        model = build_model(
            {
                "layers": [
                    {"type": "dense", "units": 256, "kernel_initializer": init},
                    {"type": "dense", "units": 2, "activation": "softmax"},
                ]
            },
            (1024,),
        )
        record = probe(model, torch.randn(8, 1024), torch.zeros(8, dtype=torch.long))
        assert record["layers"][0]["kernel_mean_square_x_fan_in"] == pytest.approx(expected, rel=0.03)


def test_non_finite_values_become_strings_and_back():
    assert json_number(1.5) == 1.5
    assert [json_number(v) for v in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]
    assert math.isnan(number("nan")) and number("-inf") == -math.inf and number(None) is None
    model = build(dense_stack("relu", "he_normal", 2))
    with torch.no_grad():
        model.dense_1.linear.weight[0, 0] = math.inf
    record = probe(model, *batch(16))
    assert record["loss"] == "nan"
    assert record["layers"][0]["grad_norm"] == "nan"


def test_probe_batch_is_a_fixed_random_sample():
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    y = np.arange(1000)
    xs, ys = probe_batch(x, y, 100)
    assert len(xs) == 100 and torch.equal(xs[:, 0].long(), ys)
    assert not torch.equal(
        ys, torch.arange(100)
    )  # not the first 100: a training split may be sorted by class
    assert torch.equal(probe_batch(x, y, 100)[1], ys)  # the same sample every time
    assert len(probe_batch(x[:10], y[:10], 100)[0]) == 10


def test_probe_handles_channels_last_dense_outputs():
    model = build_model(
        {
            "layers": [
                {"type": "dense", "units": 4, "activation": "relu"},
                {"type": "flatten"},
                {"type": "dense", "units": 2, "activation": "softmax"},
            ]
        },
        (3, WIDTH),
    )
    record = probe(model, torch.randn(5, 3, WIDTH), torch.zeros(5, dtype=torch.long))
    assert record["layers"][0]["units"] == 4


def test_frozen_kernels_are_recorded_with_no_gradient():
    model = build(dense_stack("relu", "he_normal", 2))
    model.dense_1.linear.weight.requires_grad_(False)
    record = probe(model, *batch(16))
    assert record["layers"][0]["grad_norm"] == 0.0 and record["layers"][1]["grad_norm"] > 0
    assert [layer["trainable"] for layer in record["layers"]] == [False, True, True]
    assert judge([record]) == []  # a frozen layer's zero gradient is not a vanishing gradient
