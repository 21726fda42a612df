"""Initializers: statistics of large draws against the distributions the papers and Keras define.

Every expected value is computed here from the definition (Glorot & Bengio 2010, He et al. 2015, LeCun et al.
1998; Keras's VarianceScaling), never read from trainwell. Tolerances come from the sample size: with the mean
known to be 0, ``mean(w²)`` estimates σ² with standard error ``sqrt((μ4 − σ⁴) / N)`` exactly, where μ4 is the
distribution's fourth moment (derived below for each distribution). Each check allows ``Z`` standard errors
(a false alarm once in ~1.7 million runs at Z = 5) and, before it runs, asserts that it could see a 5 % error in
the variance — a gain off by √2 doubles it, a missing 0.8796 correction shrinks it by 23 %.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.nn.initializers import TRUNCATED_NORMAL_STD, compute_fans, variance_scaling_

Z = 5.0  # standard errors allowed
FAN_IN, FAN_OUT = 500, 200  # a Dense(200) on 500 inputs: a torch weight of (200, 500), N = 100,000 values
N = FAN_IN * FAN_OUT


def phi(x: float) -> float:
    """Standard normal pdf."""
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def mass_within(a: float) -> float:
    """P(|X| < a) for a standard normal X: Φ(a) − Φ(−a) = erf(a / √2)."""
    return math.erf(a / math.sqrt(2))


def truncated_moments(a: float) -> tuple[float, float]:
    """Variance and fourth moment of a standard normal truncated to [−a, a].

    By parts, ∫x²φ = Z − 2aφ(a) and ∫x⁴φ = 3∫x²φ − 2a³φ(a) over [−a, a], with Z = P(|X| < a).
    """
    z = mass_within(a)
    return 1 - 2 * a * phi(a) / z, 3 - 2 * (a**3 + 3 * a) * phi(a) / z


def kernel(initializer: object, seed: int = 0, fan_in: int = FAN_IN, units: int = FAN_OUT) -> torch.Tensor:
    """The kernel of a Dense(units) on fan_in inputs built from a config, as a float64 torch weight."""
    torch.manual_seed(seed)
    model = build_model(
        {"layers": [{"type": "dense", "units": units, "kernel_initializer": initializer}]}, (fan_in,)
    )
    return model[0].linear.weight.detach().double()


def assert_variance(w: torch.Tensor, variance: float, fourth_moment: float) -> None:
    """mean(w) ≈ 0 and mean(w²) ≈ variance, within Z standard errors of a draw of w.numel() values."""
    n = w.numel()
    se_var = math.sqrt((fourth_moment - variance**2) / n)
    assert Z * se_var < 0.05 * variance, "the test could not see a 5% error in the variance: draw more values"
    assert abs(w.mean().item()) < Z * math.sqrt(variance / n)
    assert w.square().mean().item() == pytest.approx(variance, abs=Z * se_var)


def assert_truncated_normal(w: torch.Tensor, std: float) -> None:
    """``w`` is N(0, s²) truncated at ±2s with s = std / 0.8796..., so that its std is ``std``."""
    var1, m4_1 = truncated_moments(2.0)
    assert_variance(w, std**2, m4_1 * (std**2 / var1) ** 2)
    s = std / math.sqrt(var1)
    bound = 2 * s
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    # The largest value lies near the bound: no value in [0.99·bound, bound] has this probability.
    p_near = (mass_within(2.0) - mass_within(1.98)) / mass_within(2.0)
    assert (1 - p_near) ** w.numel() < 1e-9
    assert w.abs().max().item() > 0.99 * bound
    # The shape: P(|w| < s) is erf(1/√2) / erf(√2) = 0.715 for the truncated normal (0.683 untruncated).
    p = mass_within(1.0) / mass_within(2.0)
    inside = (w.abs() < s).double().mean().item()
    assert inside == pytest.approx(p, abs=Z * math.sqrt(p * (1 - p) / w.numel()))


def assert_uniform(w: torch.Tensor, limit: float) -> None:
    """``w`` is U(−limit, limit): variance L²/3, fourth moment L⁴/5."""
    assert_variance(w, limit**2 / 3, limit**4 / 5)
    assert w.abs().max().item() <= limit
    # P(every |w| < (1 − ε)·L) = (1 − ε)^N: with ε = 1e-3 and N = 1e5 that is e^-100.
    assert w.abs().max().item() > (1 - 1e-3) * limit


def test_truncated_normal_std_is_the_std_of_a_normal_truncated_at_two_sigmas():
    variance, _ = truncated_moments(2.0)
    assert math.isclose(TRUNCATED_NORMAL_STD, math.sqrt(variance), rel_tol=1e-15)
    assert math.isclose(
        TRUNCATED_NORMAL_STD, 0.87962566103423978, rel_tol=1e-15
    )  # the literal Keras divides by


# The presets, from their papers: the std (normal) or the limit (uniform) of each.
FAN_AVG = (FAN_IN + FAN_OUT) / 2


@pytest.mark.parametrize(
    ("name", "std"),
    [
        ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("he_normal", math.sqrt(2 / FAN_IN)),
        ("lecun_normal", math.sqrt(1 / FAN_IN)),
    ],
)
def test_normal_presets_are_truncated_at_two_sigmas_with_the_corrected_std(name, std):
    assert_truncated_normal(kernel(name), std)


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("he_uniform", math.sqrt(6 / FAN_IN)),
        ("lecun_uniform", math.sqrt(3 / FAN_IN)),
    ],
)
def test_uniform_presets_draw_within_sqrt_3_scale_over_fan(name, limit):
    assert_uniform(kernel(name), limit)


def test_dense_defaults_are_glorot_uniform_kernel_and_zero_bias():
    torch.manual_seed(1)
    dense = build_model({"layers": [{"type": "dense", "units": FAN_OUT}]}, (FAN_IN,))[0]
    assert_uniform(dense.linear.weight.detach().double(), math.sqrt(6 / (FAN_IN + FAN_OUT)))
    assert torch.equal(dense.linear.bias, torch.zeros(FAN_OUT))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_variance_scaling_in_every_mode_and_distribution(mode, distribution):
    scale = 2.0
    fan = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": FAN_AVG}[mode]
    variance = scale / fan
    w = kernel(
        {"name": "variance_scaling", "scale": scale, "mode": mode, "distribution": distribution}, seed=2
    )
    if distribution == "truncated_normal":
        assert_truncated_normal(w, math.sqrt(variance))
    elif distribution == "uniform":
        assert_uniform(w, math.sqrt(3 * variance))
    else:
        assert_variance(w, variance, 3 * variance**2)  # a normal's fourth moment is 3σ⁴
        assert w.abs().max().item() > 3 * math.sqrt(variance)  # untruncated: P(all within 3σ) = 0.9973^N ≈ 0


def test_untruncated_he_normal_has_the_statistics_of_torch_kaiming_normal():
    """A second implementation: ``kaiming_normal_`` (untruncated He) on the same shape."""
    ours = kernel(
        {"name": "variance_scaling", "scale": 2.0, "mode": "fan_in", "distribution": "untruncated_normal"},
        seed=3,
    )
    torch.manual_seed(4)
    theirs = torch.nn.init.kaiming_normal_(
        torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64), nonlinearity="relu"
    )
    variance = 2 / FAN_IN
    se = math.sqrt(2 * variance**2 / N)  # of each mean(w²); the difference of two has √2 times that
    assert ours.square().mean().item() == pytest.approx(
        theirs.square().mean().item(), abs=Z * math.sqrt(2) * se
    )
    # Same tails: the share beyond 2σ is 1 − erf(√2) = 4.6 % for both (0 for a truncated draw).
    p = 1 - mass_within(2.0)
    tol = Z * math.sqrt(2 * p * (1 - p) / N)
    beyond = [(w.abs() > 2 * math.sqrt(variance)).double().mean().item() for w in (ours, theirs)]
    assert beyond[0] == pytest.approx(beyond[1], abs=tol)
    assert beyond[0] == pytest.approx(p, abs=tol)


def test_keras_truncated_normal_differs_from_torch_trunc_normal_with_default_bounds():
    """G13: torch's ``trunc_normal_(a=-2, b=2)`` cuts at ±2 absolute, so for a small std it is untruncated and
    uncorrected; Keras's he_normal has std exactly √(2/fan_in) and nothing beyond 2·std/0.8796."""
    torch.manual_seed(5)
    std = math.sqrt(2 / FAN_IN)
    theirs = torch.nn.init.trunc_normal_(torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64), std=std)
    assert theirs.abs().max().item() > 2 * std / TRUNCATED_NORMAL_STD
    assert_truncated_normal(kernel("he_normal", seed=5), std)


@pytest.mark.parametrize(
    ("spec", "mean", "std"),
    [
        ({"name": "random_normal"}, 0.0, 0.05),  # Keras's defaults
        ({"name": "random_normal", "mean": 1.0, "stddev": 0.5}, 1.0, 0.5),
    ],
)
def test_random_normal(spec, mean, std):
    w = kernel(spec, seed=6) - mean
    assert_variance(w, std**2, 3 * std**4)


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        ({"name": "random_uniform"}, -0.05, 0.05),  # Keras's defaults
        ({"name": "random_uniform", "minval": -0.2, "maxval": 0.6}, -0.2, 0.6),
    ],
)
def test_random_uniform(spec, low, high):
    w = kernel(spec, seed=7)
    assert low <= w.min().item() and w.max().item() <= high
    assert_uniform(w - (low + high) / 2, (high - low) / 2)


@pytest.mark.parametrize(
    ("spec", "value"), [("zeros", 0.0), ("ones", 1.0), ({"name": "constant", "value": -0.3}, -0.3)]
)
def test_constant_initializers_fill_kernel_and_bias(spec, value):
    model = build_model(
        {"layers": [{"type": "dense", "units": 3, "kernel_initializer": spec, "bias_initializer": spec}]},
        (4,),
    )
    dense = model[0].linear
    assert torch.equal(dense.weight, torch.full((3, 4), value)) and torch.equal(
        dense.bias, torch.full((3,), value)
    )


@pytest.mark.parametrize(("fan_in", "units"), [(50, 20), (20, 50)])
def test_orthogonal_gives_orthonormal_rows_or_columns_times_the_gain(fan_in, units):
    w = kernel(
        {"name": "orthogonal", "gain": 2.0}, seed=8, fan_in=fan_in, units=units
    )  # torch layout (units, in)
    # Keras: the kernel (in, out) has orthonormal rows when in < out, else orthonormal columns; in the torch
    # layout that is W·Wᵀ = I when units ≤ in, else Wᵀ·W = I; times gain².
    gram = w @ w.T if units <= fan_in else w.T @ w
    torch.testing.assert_close(
        gram, 4.0 * torch.eye(min(fan_in, units), dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_bias_initializers_use_keras_fans_of_a_vector():
    """Keras's ``compute_fans`` gives a vector fan_in = fan_out = its length, so he_uniform on a bias of
    ``units`` values draws from ±sqrt(6 / units)."""
    torch.manual_seed(9)
    units = 100_000
    bias = (
        build_model({"layers": [{"type": "dense", "units": units, "bias_initializer": "he_uniform"}]}, (1,))[
            0
        ]
        .linear.bias.detach()
        .double()
    )
    assert_uniform(bias, math.sqrt(6 / units))


def keras_compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's compute_fans, on a Keras-layout shape (in, out) or (kh, kw, in, out)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


@pytest.mark.parametrize("keras_shape", [(), (7,), (300, 100), (5, 5, 3, 8), (3, 3, 3, 16, 4)])
def test_fans_of_torch_layouts_match_keras_fans_of_keras_layouts(keras_shape):
    if len(keras_shape) < 2:
        torch_shape = keras_shape
    else:  # torch is (out, in, *receptive) where Keras is (*receptive, in, out)
        torch_shape = (keras_shape[-1], keras_shape[-2], *keras_shape[:-2])
    assert compute_fans(torch_shape) == keras_compute_fans(keras_shape)


def test_variance_scaling_rejects_bad_arguments_with_the_valid_ones():
    w = torch.empty(3, 3)
    with pytest.raises(ValueError, match="mode must be one of fan_in, fan_out, fan_avg; got 'fan_x'"):
        variance_scaling_(w, mode="fan_x")
    with pytest.raises(
        ValueError, match="distribution must be one of truncated_normal, untruncated_normal, uniform"
    ):
        variance_scaling_(w, distribution="normal")
    with pytest.raises(ValueError, match="scale must be > 0"):
        variance_scaling_(w, scale=0.0)


def test_unknown_and_invalid_initializers_are_config_errors_with_the_key_path():
    with pytest.raises(
        ConfigError,
        match=r"model.layers\[0\].kernel_initializer: unknown kernel_initializer "
        r"'he_normall' \(did you mean 'he_normal'\?\); valid names: constant, "
        r"glorot_normal, glorot_uniform, he_normal",
    ):
        kernel("he_normall")
    with pytest.raises(
        ConfigError,
        match=r"kernel_initializer.mode: Input should be 'fan_in', 'fan_out' or "
        r"'fan_avg' \(got 'fan_x'\)",
    ):
        kernel({"name": "variance_scaling", "mode": "fan_x"})
    with pytest.raises(ConfigError, match=r"kernel_initializer.scale: Input should be greater than 0"):
        kernel({"name": "variance_scaling", "scale": -1})
    with pytest.raises(ConfigError, match=r"minval \(0.5\) must be below maxval \(0.1\)"):
        kernel({"name": "random_uniform", "minval": 0.5, "maxval": 0.1})
    with pytest.raises(ConfigError, match=r"model.layers\[0\].bias_initializer: orthogonal needs a matrix"):
        build_model({"layers": [{"type": "dense", "units": 3, "bias_initializer": "orthogonal"}]}, (2,))
