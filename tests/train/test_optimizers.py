"""Optimizers: Keras names and defaults, every update against the chapter's formulas (written out here in
NumPy), the documented differences from Keras (which trainwell follows torch on), clipping and ``decay``.

The reference problem is a small quadratic ``J(θ) = ½ θᵀAθ − bᵀθ`` with ``∇J(θ) = Aθ − b``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainwell.errors import ConfigError
from trainwell.train.optimizers import OPTIMIZERS, build_optimizer, momentum_key, validate_optimizer_spec

A = np.diag([1.0, 3.0, 0.5]) + 0.2  # symmetric positive definite
B = np.array([1.0, -2.0, 0.5])
THETA0 = np.array([0.5, 1.5, -1.0])
STEPS = 25


def grad_j(theta: np.ndarray) -> np.ndarray:
    return A @ theta - B


def run_torch(spec: dict, steps: int = STEPS, lrs: list[float] | None = None) -> np.ndarray:
    """θ after ``steps`` updates of trainwell's optimizer on J, in float64; ``lrs`` sets the LR per step."""
    theta = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = build_optimizer(spec, [theta])
    a, b = torch.tensor(A), torch.tensor(B)
    for t in range(steps):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()
        opt.step()
    return theta.detach().numpy()


# --- Keras names and defaults ------------------------------------------------------------------------------

KERAS_DEFAULTS = {  # keras.optimizers.<Name>() defaults (Keras 3 docs), in torch's param-group names
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "adagrad": {"lr": 0.001, "initial_accumulator_value": 0.1, "eps": 1e-7},
    "rmsprop": {"lr": 0.001, "alpha": 0.9, "momentum": 0.0, "eps": 1e-7, "centered": False},
    "adam": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7, "amsgrad": False},
    "adamax": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7},
    "nadam": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7, "momentum_decay": 0.004},
    "adamw": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004, "amsgrad": False},
}


@pytest.mark.parametrize("name", sorted(KERAS_DEFAULTS))
def test_keras_defaults(name):
    opt = build_optimizer({"name": name}, [torch.nn.Parameter(torch.zeros(2))])
    group = opt.param_groups[0]
    for key, value in KERAS_DEFAULTS[name].items():
        assert group[key] == value, key
    assert set(KERAS_DEFAULTS) == set(OPTIMIZERS)


def test_keras_parameter_names_reach_torch():
    p = [torch.nn.Parameter(torch.zeros(2))]
    g = build_optimizer(
        {"name": "rmsprop", "rho": 0.8, "momentum": 0.5, "epsilon": 1e-4, "centered": True}, p
    )
    assert (g.param_groups[0]["alpha"], g.param_groups[0]["momentum"], g.param_groups[0]["eps"]) == (
        0.8,
        0.5,
        1e-4,
    )
    g = build_optimizer({"name": "nadam", "beta_1": 0.8, "beta_2": 0.99}, p)
    assert g.param_groups[0]["betas"] == (0.8, 0.99)
    g = build_optimizer({"name": "adagrad", "initial_accumulator_value": 0.3}, p)
    assert g.param_groups[0]["initial_accumulator_value"] == 0.3


def build_optimizer_spec(name: str):
    return validate_optimizer_spec({"name": name})


def test_momentum_metadata_for_1cycle():
    specs = {n: build_optimizer_spec(n) for n in OPTIMIZERS}
    assert {n: momentum_key(spec) for n, spec in specs.items()} == {
        "sgd": "momentum",
        "rmsprop": "momentum",
        "adagrad": None,
        "adam": "betas",
        "adamax": "betas",
        "nadam": "betas",
        "adamw": "betas",
    }


# --- the chapter's update rules, in NumPy ------------------------------------------------------------------


def chapter_momentum(lr, beta, nesterov=False, steps=STEPS):
    """Eq. 11-4: m ← βm − η∇J(θ); θ ← θ + m.  NAG (eq. 11-5): the gradient at θ + βm."""
    theta, m = THETA0.copy(), np.zeros(3)
    for _ in range(steps):
        m = beta * m - lr * grad_j(theta + beta * m if nesterov else theta)
        theta = theta + m
    return theta, m


def test_sgd_is_plain_gradient_descent():
    theta = THETA0.copy()
    for _ in range(STEPS):
        theta = theta - 0.1 * grad_j(theta)
    np.testing.assert_allclose(run_torch({"name": "sgd", "learning_rate": 0.1}), theta, rtol=1e-12)


def test_momentum_matches_the_chapter():
    theta, _ = chapter_momentum(0.05, 0.9)
    np.testing.assert_allclose(
        run_torch({"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}), theta, rtol=1e-10
    )


def test_nesterov_matches_the_chapter_at_the_look_ahead_point():
    """torch's Nesterov (Sutskever/Bengio form) tracks the look-ahead point θ + βm of the chapter's NAG:
    with b = −m/η the two recurrences are the same, so trainwell's parameter is the chapter's θ + βm."""
    theta, m = chapter_momentum(0.05, 0.9, nesterov=True)
    got = run_torch({"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True})
    np.testing.assert_allclose(got, theta + 0.9 * m, rtol=1e-10)
    assert not np.allclose(got, theta, rtol=1e-3)  # it is not θ itself


def test_adagrad_matches_the_chapter():
    """Eq. 11-6: s ← s + ∇J⊗∇J; θ ← θ − η∇J ⊘ √(s + ε); s starts at Keras's initial_accumulator_value."""
    lr, eps, s0 = 0.5, 1e-7, 0.1
    theta, s = THETA0.copy(), np.full(3, s0)
    for _ in range(STEPS):
        g = grad_j(theta)
        s = s + g * g
        theta = theta - lr * g / np.sqrt(s + eps)
    got = run_torch({"name": "adagrad", "learning_rate": lr})
    np.testing.assert_allclose(got, theta, rtol=1e-6)  # ε inside vs after the root: ~1e-7 relative here


def test_rmsprop_matches_the_chapter():
    """Eq. 11-7: s ← ρs + (1−ρ)∇J⊗∇J; θ ← θ − η∇J ⊘ √(s + ε)."""
    lr, rho, eps = 0.01, 0.9, 1e-7
    theta, s = THETA0.copy(), np.zeros(3)
    for _ in range(STEPS):
        g = grad_j(theta)
        s = rho * s + (1 - rho) * g * g
        theta = theta - lr * g / np.sqrt(s + eps)
    np.testing.assert_allclose(run_torch({"name": "rmsprop", "learning_rate": lr}), theta, rtol=1e-6)


def chapter_adam(lr, b1, b2, eps, steps=STEPS):
    """Eq. 11-8: m ← β1m − (1−β1)∇J; s ← β2s + (1−β2)∇J⊗∇J; m̂ = m/(1−β1^t); ŝ = s/(1−β2^t);
    θ ← θ + η m̂ ⊘ √(ŝ + ε)."""
    theta, m, s = THETA0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, steps + 1):
        g = grad_j(theta)
        m = b1 * m - (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        theta = theta + lr * m_hat / np.sqrt(s_hat + eps)
    return theta


def test_adam_matches_the_chapter():
    np.testing.assert_allclose(
        run_torch({"name": "adam", "learning_rate": 0.01}), chapter_adam(0.01, 0.9, 0.999, 1e-7), rtol=1e-6
    )


def test_adamax_matches_kingma_and_ba():
    """Adamax (Kingma & Ba 2015, Alg. 2): m ← β1m + (1−β1)g; u ← max(β2u, |g|); θ ← θ − η/(1−β1^t)·m/u
    (torch adds ε inside the max)."""
    lr, b1, b2, eps = 0.02, 0.9, 0.999, 1e-7
    theta, m, u = THETA0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, STEPS + 1):
        g = grad_j(theta)
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        theta = theta - lr / (1 - b1**t) * m / u
    np.testing.assert_allclose(run_torch({"name": "adamax", "learning_rate": lr}), theta, rtol=1e-10)


def test_nadam_matches_keras_2s_update_with_the_0_96_schedule():
    """Keras 2's Nadam (the chapter's era; Dozat 2016): μ_t = β1(1 − ½·0.96^(0.004·t)),
    ĝ = g/(1 − Πμ_{≤t}), m̂ = m_t/(1 − Πμ_{≤t+1}), m̄ = (1−μ_t)ĝ + μ_{t+1}m̂, θ ← θ − η m̄/(√v̂ + ε)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    theta, m, v, schedule = THETA0.copy(), np.zeros(3), np.zeros(3), 1.0
    for t in range(1, STEPS + 1):
        g = grad_j(theta)
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * 0.004))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.004))
        schedule_new = schedule * mu_t
        schedule_next = schedule_new * mu_next
        schedule = schedule_new
        g_prime = g / (1 - schedule_new)
        m = b1 * m + (1 - b1) * g
        m_prime = m / (1 - schedule_next)
        v = b2 * v + (1 - b2) * g * g
        v_prime = v / (1 - b2**t)
        m_bar = (1 - mu_t) * g_prime + mu_next * m_prime
        theta = theta - lr * m_bar / (np.sqrt(v_prime) + eps)
    # torch keeps Πμ in float32 (a 0-d tensor), hence 1e-6 rather than 1e-12
    np.testing.assert_allclose(run_torch({"name": "nadam", "learning_rate": lr}), theta, rtol=1e-6)


def test_adamw_decouples_weight_decay():
    """Loshchilov & Hutter: θ ← θ·(1 − ηλ), then the Adam update (here Adam with torch's ε placement)."""
    lr, wd = 0.01, 0.1
    theta, m, v = THETA0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, STEPS + 1):
        g = grad_j(theta)
        theta = theta * (1 - lr * wd)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta = theta - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-7)
    np.testing.assert_allclose(
        run_torch({"name": "adamw", "learning_rate": lr, "weight_decay": wd}), theta, rtol=1e-10
    )


# --- where torch's rule differs from Keras's, trainwell follows torch (docs/keras-vs-torch.md) -------------


def test_adam_epsilon_is_added_to_the_corrected_root_as_torch_does_not_keras_epsilon_hat():
    """G6, made visible with a large ε: torch θ −= η m̂/(√v̂ + ε); Keras θ −= η√(1−β2^t)/(1−β1^t)·m/(√v + ε)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 0.1
    torch_form, keras_form = THETA0.copy(), THETA0.copy()
    mt, vt, mk, vk = (np.zeros(3) for _ in range(4))
    for t in range(1, STEPS + 1):
        g = grad_j(torch_form)
        mt, vt = b1 * mt + (1 - b1) * g, b2 * vt + (1 - b2) * g * g
        torch_form = torch_form - lr * (mt / (1 - b1**t)) / (np.sqrt(vt / (1 - b2**t)) + eps)
        g = grad_j(keras_form)
        mk, vk = b1 * mk + (1 - b1) * g, b2 * vk + (1 - b2) * g * g
        keras_form = keras_form - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * mk / (np.sqrt(vk) + eps)
    got = run_torch({"name": "adam", "learning_rate": lr, "epsilon": eps})
    np.testing.assert_allclose(got, torch_form, rtol=1e-10)
    assert np.abs(got - keras_form).max() > 1e-3


def test_rmsprop_epsilon_is_added_after_the_root():
    """G7 with a large ε: torch θ −= ηg/(√s + ε), Keras (and the chapter) θ −= ηg/√(s + ε)."""
    lr, rho, eps = 0.01, 0.9, 0.5
    after, inside = THETA0.copy(), THETA0.copy()
    sa, si = np.zeros(3), np.zeros(3)
    for _ in range(STEPS):
        g = grad_j(after)
        sa = rho * sa + (1 - rho) * g * g
        after = after - lr * g / (np.sqrt(sa) + eps)
        g = grad_j(inside)
        si = rho * si + (1 - rho) * g * g
        inside = inside - lr * g / np.sqrt(si + eps)
    got = run_torch({"name": "rmsprop", "learning_rate": lr, "epsilon": eps})
    np.testing.assert_allclose(got, after, rtol=1e-10)
    assert np.abs(got - inside).max() > 1e-3


def test_sgd_momentum_scales_the_whole_buffer_by_the_current_lr_as_torch_does():
    """G10: identical at a constant LR (test above); when the LR changes, torch's b ← βb + g, θ −= η_t b
    rescales the accumulated momentum at once, where Keras's m ← βm − η_t g keeps the old LR inside m."""
    lrs = [0.05] * 10 + [0.005] * (STEPS - 10)
    torch_form, keras_form = THETA0.copy(), THETA0.copy()
    b, m = np.zeros(3), np.zeros(3)
    for lr in lrs:
        b = 0.9 * b + grad_j(torch_form)
        torch_form = torch_form - lr * b
        m = 0.9 * m - lr * grad_j(keras_form)
        keras_form = keras_form + m
    got = run_torch({"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, lrs=lrs)
    np.testing.assert_allclose(got, torch_form, rtol=1e-10)
    assert np.abs(got - keras_form).max() > 1e-2


# --- clipping: Keras's semantics, in optimizer.step() ------------------------------------------------------


def clip_step(spec: dict, grads: list[list[float]]) -> list[np.ndarray]:
    """The update of plain SGD (lr 1) with the given gradients set by hand: −(clipped gradient)."""
    params = [torch.nn.Parameter(torch.zeros(len(g), dtype=torch.float64)) for g in grads]
    opt = build_optimizer({"name": "sgd", "learning_rate": 1.0, **spec}, params)
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()  # outside any trainwell loop
    return [-p.detach().numpy() for p in params]


def test_clipvalue_clips_each_component():
    got = clip_step({"clipvalue": 0.5}, [[3.0, -0.2, -4.0]])
    np.testing.assert_array_equal(got[0], [0.5, -0.2, -0.5])


def test_clipnorm_clips_each_tensor_by_its_own_norm():
    big, small = [3.0, 4.0], [0.3, 0.4]  # norms 5 and 0.5
    got = clip_step({"clipnorm": 1.0}, [big, small])
    keras = [np.array(g) * 1.0 / max(np.linalg.norm(g), 1.0) for g in (big, small)]  # tf.clip_by_norm
    np.testing.assert_allclose(got[0], keras[0], rtol=1e-6)  # torch divides by norm + 1e-6
    np.testing.assert_array_equal(got[1], keras[1])


def test_global_clipnorm_scales_all_gradients_together():
    g1, g2 = [3.0, 4.0], [0.0, 12.0]  # global norm 13
    got = clip_step({"global_clipnorm": 1.0}, [g1, g2])
    np.testing.assert_allclose(got[0], np.array(g1) / 13, rtol=1e-6)
    np.testing.assert_allclose(got[1], np.array(g2) / 13, rtol=1e-6)


def test_only_one_clipping_mode():
    with pytest.raises(ConfigError, match="set at most one of clipvalue, clipnorm, global_clipnorm"):
        build_optimizer(
            {"name": "adam", "clipnorm": 1.0, "clipvalue": 0.5}, [torch.nn.Parameter(torch.zeros(1))]
        )


# --- Keras's decay ----------------------------------------------------------------------------------------


def test_decay_is_power_scheduling_per_update():
    """Keras 2: the t-th update (t = 0, 1, …) uses η0 / (1 + decay·t). A constant gradient makes each update
    −η_t·g, so θ after k steps is −g·Σ η_t."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1, "decay": 0.5}, [p])
    for _ in range(5):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    expected = -sum(0.1 / (1 + 0.5 * t) for t in range(5))
    assert p.item() == pytest.approx(expected, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.5 * 5))


def test_decay_survives_a_state_dict_round_trip():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = build_optimizer({"name": "adam", "learning_rate": 0.1, "decay": 0.5}, [p])
    for _ in range(3):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    again = build_optimizer({"name": "adam", "learning_rate": 0.1, "decay": 0.5}, [p])
    again.load_state_dict(opt.state_dict())
    p.grad = torch.ones(1, dtype=torch.float64)
    again.step()
    assert again.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.5 * 4))


# --- errors ---------------------------------------------------------------------------------------------


def test_unknown_optimizer_names_the_closest():
    with pytest.raises(ConfigError, match=r"optimizer.*'nadamm'.*did you mean 'nadam'"):
        build_optimizer({"name": "nadamm"}, [torch.nn.Parameter(torch.zeros(1))])


def test_auto_learning_rate_must_be_resolved_first():
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate: \"auto\".*find_lr"):
        build_optimizer({"name": "sgd", "learning_rate": "auto"}, [torch.nn.Parameter(torch.zeros(1))])


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"optimizer\.momentum"):
        build_optimizer({"name": "sgd", "momentum": 1.5}, [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="nesterov = true needs momentum > 0"):
        build_optimizer({"name": "sgd", "nesterov": True}, [torch.nn.Parameter(torch.zeros(1))])
