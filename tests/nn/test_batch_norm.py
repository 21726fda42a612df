"""Batch Normalization with Keras's conventions: moving statistics after known batches, center/scale, BN as the
first layer and on channels-last inputs, a bias-free dense layer before BN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainwell.config import load_config
from trainwell.nn.build import build_model, count_parameters
from trainwell.nn.layers import BatchNorm
from trainwell.nn.summary import summarize_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCHES = [  # two features; hand-made batches of different sizes
    [[1.0, 10.0], [2.0, 20.0], [4.0, 0.0], [5.0, -6.0]],
    [[0.0, 1.0], [3.0, 1.0], [3.0, 4.0]],
]


def batch_norm(shape: tuple[int, ...] = (2,), **options: object) -> BatchNorm:
    return build_model({"layers": [{"type": "batch_norm", **options}]}, shape)[0].double()


def moments(batch: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per-feature mean and biased variance (Σ(x − μ)² / n), by hand."""
    n = len(batch)
    mean = [sum(row[j] for row in batch) / n for j in range(len(batch[0]))]
    var = [sum((row[j] - mean[j]) ** 2 for row in batch) / n for j in range(len(batch[0]))]
    return mean, var


def test_moving_statistics_follow_keras_momentum_with_torchs_unbiased_variance():
    """G3. With Keras's momentum m, after each training batch of n samples:
        moving_mean ← m · moving_mean + (1 − m) · μ_B
        moving_var  ← m · moving_var  + (1 − m) · σ²_B · n / (n − 1)     (Keras: σ²_B, without n / (n − 1))
    starting from 0 and 1, as in both libraries."""
    m = 0.9
    bn = batch_norm(momentum=m)
    moving_mean, moving_var, keras_var = [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]
    for batch in BATCHES:
        bn.train()(torch.tensor(batch, dtype=torch.float64))
        n = len(batch)
        mu, var = moments(batch)
        moving_mean = [m * a + (1 - m) * b for a, b in zip(moving_mean, mu, strict=True)]
        moving_var = [m * a + (1 - m) * b * n / (n - 1) for a, b in zip(moving_var, var, strict=True)]
        keras_var = [m * a + (1 - m) * b for a, b in zip(keras_var, var, strict=True)]
    torch.testing.assert_close(bn.running_mean, torch.tensor(moving_mean, dtype=torch.float64))
    torch.testing.assert_close(bn.running_var, torch.tensor(moving_var, dtype=torch.float64))
    assert not torch.allclose(
        bn.running_var, torch.tensor(keras_var, dtype=torch.float64)
    )  # the documented gap


def test_keras_default_momentum_keeps_99_percent_of_the_moving_mean():
    bn = batch_norm()
    bn.train()(torch.tensor(BATCHES[0], dtype=torch.float64))
    mu, _ = moments(BATCHES[0])
    torch.testing.assert_close(bn.running_mean, torch.tensor([0.01 * v for v in mu], dtype=torch.float64))


def test_training_output_uses_batch_statistics_and_inference_the_moving_ones():
    bn = batch_norm()
    gamma, beta, eps = [2.0, 3.0], [0.5, -1.0], 1e-3  # eps: Keras's default
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    x = torch.tensor(BATCHES[0], dtype=torch.float64)
    mu, var = moments(BATCHES[0])  # training normalizes with the biased batch variance
    want = [
        [gamma[j] * (row[j] - mu[j]) / math.sqrt(var[j] + eps) + beta[j] for j in range(2)]
        for row in BATCHES[0]
    ]
    torch.testing.assert_close(bn.train()(x), torch.tensor(want, dtype=torch.float64))
    mean, moving = bn.running_mean.tolist(), bn.running_var.tolist()
    want = [
        [gamma[j] * (row[j] - mean[j]) / math.sqrt(moving[j] + eps) + beta[j] for j in range(2)]
        for row in BATCHES[1]
    ]
    torch.testing.assert_close(
        bn.eval()(torch.tensor(BATCHES[1], dtype=torch.float64)), torch.tensor(want, dtype=torch.float64)
    )
    assert bn.running_mean.tolist() == mean  # inference does not update the moving statistics


@pytest.mark.parametrize(("center", "scale"), [(False, True), (True, False), (False, False)])
def test_center_and_scale_drop_beta_and_gamma(center, scale):
    bn = batch_norm(center=center, scale=scale)
    assert (bn.bias is not None) == center and (bn.weight is not None) == scale
    trainable = 2 * (int(center) + int(scale))
    assert count_parameters(bn) == {"total": trainable + 4, "trainable": trainable, "non_trainable": 4}
    with torch.no_grad():
        if scale:
            bn.weight.fill_(2.0)
        if center:
            bn.bias.fill_(0.5)
    x = torch.tensor(BATCHES[0], dtype=torch.float64)
    mu, var = moments(BATCHES[0])
    g, b = (2.0 if scale else 1.0), (0.5 if center else 0.0)
    want = [[g * (row[j] - mu[j]) / math.sqrt(var[j] + 1e-3) + b for j in range(2)] for row in BATCHES[0]]
    torch.testing.assert_close(bn.train()(x), torch.tensor(want, dtype=torch.float64))
    bn.reset_parameters()  # works without γ or β
    assert bn.running_mean.tolist() == [0.0, 0.0]


def test_channels_last_images_match_torch_batchnorm2d_on_channels_first():
    """BN as the first layer, on (N, H, W, C) images, normalizes the channel axis (Keras's axis = -1): the same
    as torch's BatchNorm2d on the (N, C, H, W) permutation, with torch's momentum = 1 − Keras's."""
    torch.manual_seed(0)
    ours = batch_norm((5, 4, 3), momentum=0.8)
    theirs = nn.BatchNorm2d(3, eps=1e-3, momentum=0.2).double()
    x = torch.randn(6, 5, 4, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor(
        [0.0, 5.0, -5.0]
    )
    for module in (ours, theirs):
        module.train()
    torch.testing.assert_close(ours(x), theirs(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def test_sequences_normalize_the_last_axis_even_when_it_equals_the_length():
    """G5: on (N, L, C) Keras normalizes C; torch's BatchNorm1d would normalize dim 1 (L). L == C here, which
    is where a wrong axis would go unnoticed by shapes."""
    torch.manual_seed(1)
    ours = batch_norm((4, 4))
    theirs = nn.BatchNorm1d(4, eps=1e-3, momentum=0.01).double()
    x = torch.randn(8, 4, 4, dtype=torch.float64) * torch.arange(1.0, 5.0, dtype=torch.float64)
    torch.testing.assert_close(ours.train()(x), theirs.train()(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(ours.running_var, theirs.running_var)


def test_batch_norm_as_first_layer_of_an_image_model():
    model = build_model(
        {
            "layers": [
                {"type": "batch_norm"},
                {"type": "flatten"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        },
        (28, 28, 1),
    )
    summary = summarize_model(model, (28, 28, 1))
    assert summary["layers"][0]["output_shape"] == [28, 28, 1]
    assert (summary["layers"][0]["trainable"], summary["layers"][0]["non_trainable"]) == (2, 2)
    probs = model.eval()(torch.rand(3, 28, 28, 1))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_bn_before_activation_example_has_bias_free_dense_layers_and_keras_counts():
    config = load_config(EXAMPLES / "fashion_mnist_bn_before_activation.toml")
    model = build_model(config.model, (28, 28, 1))
    hidden = [m for name, m in model.named_children() if name in ("dense_1", "dense_2")]
    assert all(m.linear.bias is None for m in hidden) and model.dense_3.linear.bias is not None
    # By hand: BN has 4 vectors per feature (γ, β trainable; moving mean, variance not); bias-free dense in·out.
    bn = [784, 300, 100]
    trainable = sum(2 * c for c in bn) + 784 * 300 + 300 * 100 + (100 * 10 + 10)
    summary = summarize_model(model, (28, 28, 1))
    assert (
        (summary["total"], summary["trainable"], summary["non_trainable"])
        == (trainable + 2 * sum(bn), trainable, 2 * sum(bn))
        == (270_946, 268_578, 2_368)
    )
    kinds = [type(m).__name__ for m in model.children()]
    assert kinds == [
        "Flatten",
        "BatchNorm",
        "Dense",
        "BatchNorm",
        "ELU",
        "Dense",
        "BatchNorm",
        "ELU",
        "Dense",
        "Softmax",
    ]
