"""Regularization, Keras-exact: l1/l2 penalty values and where they are counted, max-norm after a step,
dropout, alpha dropout and MC dropout."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import blobs
from trainwell.nn.build import build_model
from trainwell.nn.constraints import constrained
from trainwell.nn.regularizers import penalty, penalty_terms
from trainwell.train.loop import evaluate, fit
from trainwell.train.losses import LOSSES
from trainwell.train.step import make_step

Z = 5.0  # standard errors allowed in the statistical checks
W1 = [[1.0, -2.0], [3.0, 0.5]]  # Σ|w| = 6.5, Σw² = 14.25
W2 = [[0.5, 0.5], [-1.0, 0.0], [2.0, 2.0]]  # Σ|w| = 6.0, Σw² = 9.5


def two_layers(reg1: dict | None, reg2: dict | None) -> torch.nn.Sequential:
    model = build_model(
        {
            "layers": [
                {
                    "type": "dense",
                    "units": 2,
                    "activation": "relu",
                    **({"kernel_regularizer": reg1} if reg1 else {}),
                },
                {
                    "type": "dense",
                    "units": 3,
                    "activation": "softmax",
                    **({"kernel_regularizer": reg2} if reg2 else {}),
                },
            ]
        },
        (2,),
    )
    with torch.no_grad():
        model[0].linear.weight.copy_(torch.tensor(W1))
        model[1].linear.weight.copy_(torch.tensor(W2))
    return model


@pytest.mark.parametrize(
    ("reg1", "reg2", "want"),
    [
        ({"l2": 0.01}, None, 0.01 * 14.25),  # Keras's l2: the full factor · Σw², not half of it
        ({"l1": 0.01}, None, 0.01 * 6.5),
        ({"l1": 0.01, "l2": 0.02}, None, 0.01 * 6.5 + 0.02 * 14.25),
        ({"l2": 0.01}, {"l1": 0.1, "l2": 0.001}, 0.01 * 14.25 + 0.1 * 6.0 + 0.001 * 9.5),
        (None, None, None),
        ({}, {"l2": 0.0}, None),  # a regularizer of zeros adds nothing
    ],
)
def test_penalty_values(reg1, reg2, want):
    total = penalty(penalty_terms(two_layers(reg1, reg2)))
    if want is None:
        assert total is None
    else:
        assert total.item() == pytest.approx(want, rel=1e-6)


def test_l2_gradient_is_twice_the_factor_like_sgd_weight_decay_of_two_l2():
    """G12: Keras's l2 = λ adds λ·Σw², whose gradient is 2λ·w, so one SGD step with it equals torch's SGD with
    weight_decay = 2λ on the kernel (and none on the bias)."""
    torch.manual_seed(0)
    lam, lr = 0.05, 0.1
    ours = build_model(
        {
            "layers": [
                {"type": "dense", "units": 3, "activation": "softmax", "kernel_regularizer": {"l2": lam}}
            ]
        },
        (4,),
    )
    theirs = copy.deepcopy(ours)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = LOSSES["sparse_categorical_crossentropy"]
    make_step(ours, ours[:-1], loss, torch.optim.SGD(ours.parameters(), lr=lr))(x, y)
    dense = theirs[0].linear
    opt = torch.optim.SGD(
        [{"params": [dense.weight], "weight_decay": 2 * lam}, {"params": [dense.bias]}], lr=lr
    )
    F.cross_entropy(theirs[:-1](x), y).backward()
    opt.step()
    torch.testing.assert_close(ours[0].linear.weight, dense.weight)
    torch.testing.assert_close(ours[0].linear.bias, dense.bias)


def test_reported_training_and_validation_losses_include_the_penalty():
    """As in Keras, the loss in the history is cross-entropy plus the penalty, for training and validation."""
    data = blobs(n=100, shape=(2,), classes=3, seed=1)
    model = two_layers({"l2": 0.01}, {"l1": 0.1})
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    with torch.no_grad():  # at the weights the single step of the epoch sees
        ce = F.cross_entropy(model[:-1](x), y).item()
    want = ce + 0.01 * 14.25 + 0.1 * 6.0
    spec = {
        "optimizer": {"name": "sgd", "learning_rate": 0.01},
        "batch_size": len(x),
        "epochs": 1,
        "device": "cpu",
    }
    history = fit(model, data, spec).history
    assert history[0]["loss"] == pytest.approx(want, rel=1e-5)
    xv, yv = torch.as_tensor(data.x_valid), torch.as_tensor(data.y_valid)
    with torch.no_grad():
        ce_valid = F.cross_entropy(model[:-1](xv), yv).item()
        pen = sum(
            t.l1 * t.weight.abs().sum().item() + t.l2 * t.weight.square().sum().item()
            for t in penalty_terms(model)
        )
    assert history[0]["val_loss"] == pytest.approx(ce_valid + pen, rel=1e-5)
    assert evaluate(model, xv, yv)["loss"] == pytest.approx(ce_valid + pen, rel=1e-5)


def test_max_norm_rescales_each_units_incoming_weights_after_the_step():
    """Keras's MaxNorm(r) on a kernel (in, out) bounds each column, i.e. each unit's incoming weights: a row
    of the torch weight. After the optimizer step, rows longer than r are scaled to length r, others kept."""
    torch.manual_seed(2)
    r, lr = 1.0, 0.5
    ours = build_model(
        {
            "layers": [
                {"type": "dense", "units": 4, "activation": "softmax", "kernel_constraint": {"max_norm": r}}
            ]
        },
        (3,),
    )
    rows = torch.tensor(
        [[0.3, 0.0, 0.4], [2.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.1, -0.2, 0.2]]
    )  # norms .5 2 3 .3
    with torch.no_grad():
        ours[0].linear.weight.copy_(rows)
    theirs = copy.deepcopy(ours)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    make_step(
        ours, ours[:-1], LOSSES["sparse_categorical_crossentropy"], torch.optim.SGD(ours.parameters(), lr=lr)
    )(x, y)
    F.cross_entropy(theirs[:-1](x), y).backward()
    with torch.no_grad():
        stepped = theirs[0].linear.weight - lr * theirs[0].linear.weight.grad  # the unconstrained step
        norms = stepped.norm(dim=1, keepdim=True)
        want = stepped * torch.clamp(r / norms, max=1.0)
    torch.testing.assert_close(ours[0].linear.weight, want)
    got = ours[0].linear.weight.norm(dim=1)
    assert (got <= r + 1e-6).all() and (got > r - 1e-5).sum() >= 2  # the two long rows sit on the bound


def test_max_norm_holds_after_every_step_of_fit():
    data = blobs(n=200, shape=(4,), classes=3, seed=3, noise=0.1)
    torch.manual_seed(3)
    model = build_model(
        {
            "layers": [
                {
                    "type": "dense",
                    "units": 8,
                    "activation": "relu",
                    "kernel_initializer": {"name": "random_normal", "stddev": 2.0},
                    "kernel_constraint": {"max_norm": 0.5},
                },
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        (4,),
    )
    assert [limit for _, limit in constrained(model)] == [0.5]
    fit(
        model,
        data,
        {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "batch_size": 16, "epochs": 1, "device": "cpu"},
    )
    norms = model[0].linear.weight.norm(dim=1)
    assert (norms <= 0.5 + 1e-6).all() and (norms > 0.5 - 1e-4).any()


def test_dropout_zeroes_a_share_rate_and_scales_survivors_in_training_only():
    p, n = 0.2, 100_000
    model = build_model({"layers": [{"type": "dropout", "rate": p}]}, (n,))
    x = torch.ones(1, n)
    torch.manual_seed(4)
    y = model.train()(x)
    dropped = (y == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=Z * math.sqrt(p * (1 - p) / n))
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))  # inverted dropout
    assert torch.equal(model.eval()(x), x)


def test_alpha_dropout_keeps_mean_zero_and_variance_one():
    """Klambauer et al. (2017), alpha dropout: a dropped value is set to α' = −λα (SELU's negative
    saturation), then the affine map a·z + b with a = (q + α'²·p·q)^(−1/2), b = −a·p·α' (q = 1 − p) restores
    mean 0 and variance 1 for inputs of mean 0 and variance 1."""
    p, q, n = 0.2, 0.8, 200_000
    lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    alpha_prime = -lam * alpha
    a = (q + alpha_prime**2 * p * q) ** -0.5
    b = -a * p * alpha_prime
    model = build_model({"layers": [{"type": "alpha_dropout", "rate": p}]}, (n,)).double()
    torch.manual_seed(5)
    x = torch.randn(1, n, dtype=torch.float64)
    y = model.train()(x)
    dropped = (y - (a * alpha_prime + b)).abs() < 1e-12
    assert dropped.double().mean().item() == pytest.approx(p, abs=Z * math.sqrt(p * q / n))
    torch.testing.assert_close(y[~dropped], a * x[~dropped] + b)
    # Output moments: mean 0 and variance 1 exactly in expectation; the SE of mean(y²) from its fourth moment
    # E[y⁴] = q·E[(a·x + b)⁴] + p·(a·α' + b)⁴ with E[(a·x + b)⁴] = 3a⁴ + 6a²b² + b⁴ for standard normal x.
    m4 = q * (3 * a**4 + 6 * a**2 * b**2 + b**4) + p * (a * alpha_prime + b) ** 4
    assert abs(y.mean().item()) < Z / math.sqrt(n)
    assert y.square().mean().item() == pytest.approx(1.0, abs=Z * math.sqrt((m4 - 1) / n))
    assert torch.equal(model.eval()(x), x)


def test_mc_dropout_stays_active_at_inference_without_switching_batch_norm_to_training():
    """G24: MC dropout must not put BN in training mode (which would use and update batch statistics)."""
    model = build_model(
        {
            "layers": [
                {"type": "dense", "units": 50},
                {"type": "batch_norm"},
                {"type": "dropout", "rate": 0.5, "mc": True},
                {"type": "alpha_dropout", "rate": 0.5, "mc": True},
            ]
        },
        (5,),
    ).eval()
    x = torch.randn(64, 5)
    first, second = model(x), model(x)
    assert not torch.equal(first, second)  # dropout draws a new mask every call
    bn = model.batch_normalization_1
    assert torch.equal(bn.running_mean, torch.zeros(50)) and bn.num_batches_tracked.item() == 0
    without_dropout = model[:2](x)  # moving statistics (0, 1) and ε = 1e-3: (x − 0) / sqrt(1 + 1e-3)
    torch.testing.assert_close(without_dropout, model[0](x) / math.sqrt(1 + 1e-3))
