"""The chapter-questions studies: their measurements on hand-made models, their verdicts on hand-made
records (each answer computed in the test from the same numbers), and the preset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainwell.errors import ConfigError
from trainwell.experiments.spec import load_experiment, plan_analyses
from trainwell.experiments.studies import STUDIES
from trainwell.experiments.studies.activations import activation_choice_verdict, zero_gradient_units
from trainwell.experiments.studies.dropout import (
    DROPOUT,
    PLAIN,
    dropout_verdict,
    linear_fit,
    r_squared,
    same_time,
    with_dropout,
)
from trainwell.experiments.studies.initialization import (
    dense_fan_ins,
    he_constants,
    symmetric_init_verdict,
    zero_bias_verdict,
)
from trainwell.experiments.studies.momentum import momentum_name, momentum_verdict, sign_changes
from trainwell.nn.initializers import TRUNCATED_NORMAL_STD
from trainwell.nn.layers import Dense

QUESTION_KINDS = (
    "symmetric_init",
    "zero_bias",
    "selu_vs_relu",
    "activation_choice",
    "momentum_too_high",
    "dropout_cost",
)

# --- question 1 ------------------------------------------------------------------------------------------------


def test_he_constants_have_he_variance():
    """Squares do not see the sign, so the mean square of many draws estimates He's variance 2 / fan_in.

    Var(w²) = E[w⁴] − σ⁴; for the normal truncated at ±2 (before the std correction) the 4th moment is
    3 − 2·a³·φ(a)/(Φ(a) − Φ(−a)) − 3·2a·φ(a)/(Φ(a) − Φ(−a)) ≈ 1.8 · s⁴ with s² = σ²/0.8796²: the relative
    standard error of the mean square over n draws is below sqrt(1.8 / 0.8796⁴ − 1) / sqrt(n) ≈ 1.14 / sqrt(n),
    2.5 % for n = 2000; a gain off by √2 (a variance off by 2) is 40 standard errors away.
    """
    fan_in, n = 50, 2000
    values = np.array(he_constants([fan_in] * n, seed=3))
    assert (values >= 0).all()
    assert len(set(values.tolist())) > n * 0.99  # one draw per layer, not one value repeated
    assert np.mean(values**2) == pytest.approx(2 / fan_in, rel=5 * 1.14 / math.sqrt(n))
    bound = 2 * math.sqrt(2 / fan_in) / TRUNCATED_NORMAL_STD  # truncated at two of the draw's stds
    assert values.max() <= bound + 1e-6


def test_he_constants_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = he_constants([10, 20], seed=0)
    assert torch.rand(1) == expected_next
    assert he_constants([10, 20], seed=0) == first
    assert he_constants([10, 20], seed=1) != first


def test_dense_fan_ins():
    layers = [
        {"type": "flatten"},
        {"type": "dense", "units": 30},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 10},
    ]
    assert dense_fan_ins(layers, 784) == [784, 30]
    with pytest.raises(ValueError, match="needs a dense net"):
        dense_fan_ins([{"type": "conv2d"}, *layers], 784)


def q1_records(symmetric: list[int], const: float, narrow: float, he: float, n: int = 1000) -> dict:
    def run(acc: float, label: str, sym: list[int]) -> dict:
        return {
            "label": label,
            "status": "trained",
            "val_accuracy": acc,
            "epochs": 3,
            "symmetric": [
                {"layer": f"dense_{i}", "units": 50, "symmetric_units": s} for i, s in enumerate(sym, 1)
            ],
            "symmetric_units_finding": None,
        }

    return {
        "validation_examples": n,
        "runs": {
            "constant": run(const, "one He-drawn value", symmetric),
            "one-unit": run(narrow, "1 unit per layer", [0, 0]),
            "he-normal": run(he, "He normal", [0, 0]),
        },
    }


def test_symmetric_init_verdict_from_the_numbers():
    # identical units, and 0.30 vs 0.31: within 2·sqrt(.3·.7/1000 + .31·.69/1000) = 0.041 → agrees
    verdict, evidence, agrees = symmetric_init_verdict(q1_records([50, 50], 0.30, 0.31, 0.85))
    assert agrees is True and verdict.startswith("No")
    assert "50/50" in evidence[0]
    # identical, but the constant net scores above the narrow one beyond the noise: not the chapter's answer
    assert symmetric_init_verdict(q1_records([50, 50], 0.60, 0.31, 0.85))[2] is False
    # a layer whose units came apart: contradicts
    verdict, _, agrees = symmetric_init_verdict(q1_records([50, 0], 0.30, 0.31, 0.85))
    assert agrees is False and "contradicts" in verdict


# --- question 2 ------------------------------------------------------------------------------------------------


def test_zero_bias_verdict_uses_the_spread_over_seeds():
    zeros, rand = [0.80, 0.82, 0.81], [0.805, 0.815, 0.812]
    runs = {f"zeros-seed{s}": {"val_accuracy": a} for s, a in zip((1, 2, 3), zeros, strict=True)}
    runs |= {f"random-seed{s}": {"val_accuracy": a} for s, a in zip((1, 2, 3), rand, strict=True)}
    verdict, evidence, agrees, a, b = zero_bias_verdict(
        {"validation_examples": 1000, "runs": runs}, [1, 2, 3]
    )
    assert a == pytest.approx(0.81) and b == pytest.approx(np.mean(rand))
    assert agrees is True and "as well" in verdict
    # zero biases far worse than the seeds' spread allows: the chapter's "yes" is contradicted
    runs |= {f"zeros-seed{s}": {"val_accuracy": a - 0.2} for s, a in zip((1, 2, 3), zeros, strict=True)}
    verdict, _, agrees, _, _ = zero_bias_verdict({"validation_examples": 1000, "runs": runs}, [1, 2, 3])
    assert agrees is False and verdict.startswith("Not here")


# --- questions 3 and 4 --------------------------------------------------------------------------------------------


def test_zero_gradient_units_counts_units_dead_on_every_example():
    torch.manual_seed(0)
    relu, selu, out = Dense(4, 3, nn.ReLU()), Dense(3, 3, nn.SELU()), Dense(3, 2, nn.Softmax(dim=-1))
    with torch.no_grad():
        relu.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]))
        relu.linear.bias.copy_(torch.tensor([0.0, -10.0, -1.0]))  # unit 2: z = −10 + x₁ < 0; unit 3: z = −1
        selu.linear.bias.fill_(-50.0)  # far negative, yet exp(−50) > 0 in float32: a gradient flows
    model = nn.Sequential(relu, selu, out)
    x = torch.rand(64, 4)  # in [0, 1): unit 1 fires on nearly every example
    assert zero_gradient_units(model, x) == [(2, 3), (0, 3)]
    assert model.training  # the mode is restored


def q4_records(accs: dict[str, float], n: int = 1000) -> dict:
    runs = {
        name: {
            "label": name,
            "activation": name,
            "status": "trained",
            "val_accuracy": acc,
            "seconds_per_epoch": 1.0 + i,
            "epochs_to_converge": 2,
            "learned": acc > 0.2,
            "dead_fraction": None,
            "saturated_fraction": None,
        }
        for i, (name, acc) in enumerate(accs.items())
    }
    return {"validation_examples": n, "chance": 0.1, "runs": runs}


def test_activation_choice_verdict_ranks_and_checks_the_chapter():
    verdict, evidence, agrees = activation_choice_verdict(
        q4_records({"selu": 0.86, "relu": 0.85, "tanh": 0.78, "sigmoid": 0.10})
    )
    assert agrees is True
    assert verdict.startswith("Most accurate here: selu, relu")  # 0.01 apart: within ±0.031
    assert "sigmoid" in verdict.split("no better than chance")[1]
    assert evidence[0].startswith("Ranking by validation accuracy: selu 86.0 %, relu 85.0 %, tanh 78.0 %")
    # tanh best by far: both of the chapter's claims contradicted
    assert activation_choice_verdict(q4_records({"selu": 0.70, "relu": 0.71, "tanh": 0.85}))[2] is False


# --- question 5 ------------------------------------------------------------------------------------------------


def test_sign_changes_counts_turns():
    assert sign_changes([1, 2, 3, 2, 2, 1, 3]) == 2  # up, up, down, (flat), down, up: turns at 3 and at 1
    assert sign_changes([3, 2, 1]) == 0


def q5_records(acc_high: float | None, trace_high: list[float], status: str = "trained") -> dict:
    def run(m: float, acc: float | None, norms: list[float], st: str) -> dict:
        trace = [{"step": 10 * i, "loss": 1.0 / (i + 1), "kernel_norm": k} for i, k in enumerate(norms)]
        return {
            "momentum": m,
            "status": st,
            "val_accuracy": acc,
            "val_loss": 0.5,
            "history": [],
            "trace": trace,
        }

    return {
        "learning_rate": 0.01,
        "runs": {
            momentum_name(0.9): run(0.9, 0.85, [10.0, 10.5, 11.0], "trained"),
            momentum_name(0.99999): run(0.99999, acc_high, trace_high, status),
        },
    }


def test_momentum_verdict():
    verdict, evidence, agrees = momentum_verdict(q5_records(0.2, [10.0, 40.0, 30.0]), [0.9, 0.99999])
    assert agrees is True and "×4" in verdict  # 40 / 10 against 11 / 10
    assert "×1.1" in evidence[0]
    assert "turned 1 times" in verdict  # up then down: one turn of ‖θ‖
    verdict, evidence, _ = momentum_verdict(q5_records(0.2, [10.0, 20.0, 40.0]), [0.9, 0.99999])
    assert "never turned back" in verdict  # 20 steps against a memory of 1 / (1 - 0.99999) = 100,000 steps
    assert "100,000 steps, against 10 for 0.9" in evidence[-1]
    verdict, _, agrees = momentum_verdict(q5_records(None, [10.0], "diverged"), [0.9, 0.99999])
    assert agrees is True and "diverged" in verdict
    verdict, _, agrees = momentum_verdict(q5_records(0.9, [10.0, 10.2]), [0.9, 0.99999])
    assert agrees is False and verdict.startswith("Not in this run")


# --- question 7 ------------------------------------------------------------------------------------------------


def test_with_dropout_goes_before_every_dense_layer_but_the_first():
    layers = [
        {"type": "flatten"},
        {"type": "repeat", "count": 2, "layers": [{"type": "dense", "units": 5}]},
        {"type": "dense", "units": 3},
    ]
    assert [layer["type"] for layer in with_dropout(layers, 0.3)] == [
        "flatten",
        "dense",
        "dropout",
        "dense",
        "dropout",
        "dense",
    ]


def test_linear_fit_and_its_r_squared():
    assert linear_fit([1, 2, 4], [3, 5, 9]) == pytest.approx((1.0, 2.0))
    assert r_squared([1, 2, 4], [3, 5, 9], 1.0, 2.0) == 1.0
    # ys 1, 3, 2 around the line y = 1.5 + 0.5·x... by hand: ȳ = 2, Σ(y−ȳ)² = 2; ŷ = 1.5 + 0.5x → 2, 2.5, 3;
    # residuals −1, 0.5, −1 → Σ = 2.25; R² = 1 − 2.25 / 2 = −0.125
    assert r_squared([1, 2, 3], [1, 3, 2], 1.5, 0.5) == pytest.approx(-0.125)


def q7_records(epochs_drop: int, latency_ms: tuple[float, float], mc: list[float]) -> dict:
    plain = [{"val_accuracy": a, "seconds": 1.0} for a in (0.7, 0.8, 0.85)]
    accs = [0.6, 0.7, 0.75, 0.8, 0.85][-(epochs_drop):] if epochs_drop <= 3 else [0.5, 0.6, 0.7, 0.8, 0.85]
    drop = [{"val_accuracy": a, "seconds": 1.2} for a in accs]

    def lat(ms: float) -> dict:  # a spread of ±5 % around the median
        return {"batch_size": 1000, "median_ms": ms, "p10_ms": 0.95 * ms, "p90_ms": 1.05 * ms, "runs": 10}

    row = {PLAIN: lat(latency_ms[0]), DROPOUT: lat(latency_ms[1])}
    return {
        "history": {PLAIN: plain, DROPOUT: drop},
        "val_accuracy": {PLAIN: 0.85, DROPOUT: 0.85},
        "seconds_per_epoch": {PLAIN: 1.0, DROPOUT: 1.2},
        "threads": 1,
        "latency": [row],
        "mc_examples": 100,
        "predict_seconds": 0.01,
        "mc_seconds": [{"samples": k, "seconds": s} for k, s in zip((1, 10), mc, strict=True)],
    }


def test_dropout_verdict():
    # 0.85 reached at epoch 5 with dropout, 3 without; same inference; MC ×10 with 10 samples
    verdict, evidence, agrees = dropout_verdict(q7_records(5, (2.0, 2.05), [0.012, 0.1]), None)
    assert agrees is True
    assert "after 5 epochs against 3" in verdict and "no measurable cost" in verdict and "×10" in verdict
    # inference 1.5× slower with dropout: contradicts "no impact on inference"
    verdict, evidence, agrees = dropout_verdict(q7_records(5, (2.0, 3.0), [0.012, 0.1]), None)
    assert agrees is False and "×1.50 at batch size 1000 (+1000 µs per pass)" in verdict


def test_same_time_uses_the_measured_spread():
    a = {"median_ms": 1.0, "p10_ms": 0.5, "p90_ms": 2.0}
    b = {"median_ms": 1.3, "p10_ms": 0.8, "p90_ms": 2.5}
    assert same_time(a, b)  # 30 % apart, but each median inside the other's 10th-90th percentiles
    assert not same_time(a, {"median_ms": 1.3, "p10_ms": 1.25, "p90_ms": 1.35})
    assert same_time(a, {"median_ms": 1.05, "p10_ms": 1.04, "p90_ms": 1.06})  # within 10 %


# --- the preset and the registry ------------------------------------------------------------------------------


def test_every_question_kind_is_registered():
    for kind in QUESTION_KINDS:
        assert STUDIES[kind].kind == kind


def test_chapter_questions_preset_plans_all_seven_questions():
    experiment = load_experiment("chapter-questions")
    kinds = [a.kind for a in experiment.spec.analyses]
    assert kinds == [*QUESTION_KINDS[:5], "sparsity", "dropout_cost"]
    quick = plan_analyses(experiment, quick=True)
    assert [p.config.train.epochs for p in quick] == [5] * 7
    assert quick[1].params["seeds"] == [1, 2]
    assert quick[5].config.train.optimizer.name == "nadam"  # the sparsity study's own optimizer


def test_bad_params_and_kinds_are_errors_naming_the_key(tmp_path):
    text = (
        'name = "x"\n[base.data]\ndataset = "fashion_mnist"\n[base.model]\nlayers = [{ type = "flatten" }]\n'
        '[[analyses]]\nname = "a"\nkind = "{kind}"\nparams = {params}\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("{kind}", "zero_bias").replace("{params}", "{ seeds = [] }"))
    with pytest.raises(ConfigError, match=r"analyses \(a\)\.params.*seeds"):
        load_experiment(bad)
    bad.write_text(text.replace("{kind}", "zero_bais").replace("{params}", "{}"))
    with pytest.raises(ConfigError, match="did you mean 'zero_bias'"):
        load_experiment(bad)
