"""Model building: shapes, names, the split output activation, BN conventions, Keras parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainwell.config import load_config
from trainwell.nn.build import build_model, count_parameters, split_output
from trainwell.nn.layers import BatchNorm, Dense, MCAlphaDropout, MCDropout
from trainwell.nn.summary import summarize_model

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"


def layers(*specs: dict) -> dict:
    return {"layers": list(specs)}


def test_baseline_has_twenty_hidden_layers_and_returns_probabilities():
    config = load_config(EXAMPLES / "cifar10_baseline.toml")
    model = build_model(config.model, (32, 32, 3))
    dense = [m for m in model if isinstance(m, Dense)]
    assert len(dense) == 21
    assert all(isinstance(m.activation, nn.ELU) for m in dense[:20])
    assert list(model.named_children())[-1][0] == "output_softmax"
    x = torch.rand(5, 32, 32, 3)
    probs = model(x)
    assert probs.shape == (5, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))
    logits_model, output = split_output(model)
    assert output == "softmax"
    torch.testing.assert_close(torch.softmax(logits_model(x), dim=1), probs)


def test_children_are_named_like_keras_layers():
    model = build_model(
        layers(
            {"type": "flatten"},
            {"type": "dense", "units": 4, "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.1},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ),
        (3,),
    )
    assert [name for name, _ in model.named_children()] == [
        "flatten_1",
        "dense_1",
        "batch_normalization_1",
        "dropout_1",
        "dense_2",
        "output_softmax",
    ]


def test_fashion_bn_model_counts_parameters_as_keras():
    config = load_config(EXAMPLES / "fashion_mnist_bn.toml")
    summary = summarize_model(build_model(config.model, (28, 28, 1)), (28, 28, 1))
    # By hand: BN has 4 vectors (γ, β trainable; moving mean, variance not); Dense has in·out + out.
    bn = [784, 300, 100]
    dense = [(784, 300), (300, 100), (100, 10)]
    trainable = sum(2 * c for c in bn) + sum(i * o + o for i, o in dense)
    non_trainable = sum(2 * c for c in bn)
    assert (
        (summary["total"], summary["trainable"], summary["non_trainable"])
        == (trainable + non_trainable, trainable, non_trainable)
        == (271_346, 268_978, 2_368)
    )
    assert [layer["output_shape"] for layer in summary["layers"]][:3] == [[784], [784], [300]]


def test_frozen_parameters_are_non_trainable():
    model = build_model(layers({"type": "dense", "units": 3}), (2,))
    model[0].linear.weight.requires_grad_(False)
    assert count_parameters(model) == {"total": 9, "trainable": 3, "non_trainable": 6}


def test_batch_norm_uses_keras_momentum_and_epsilon():
    model = build_model(layers({"type": "batch_norm"}), (4,))
    bn = model[0]
    assert isinstance(bn, BatchNorm) and isinstance(bn, nn.BatchNorm1d)
    assert bn.momentum == pytest.approx(0.01) and bn.keras_momentum == pytest.approx(0.99)
    assert bn.eps == 1e-3


def test_batch_norm_without_center_or_scale_has_no_beta_or_gamma():
    bn = build_model(layers({"type": "batch_norm", "center": False, "scale": False}), (4,))[0]
    assert bn.weight is None and bn.bias is None
    assert count_parameters(bn) == {"total": 8, "trainable": 0, "non_trainable": 8}
    x = torch.randn(16, 4) * 3 + 2
    y = bn.train()(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_batch_norm_on_images_normalizes_the_last_axis():
    bn = build_model(layers({"type": "batch_norm"}), (5, 5, 3))[0]
    x = torch.randn(8, 5, 5, 3) * torch.tensor([1.0, 10.0, 100.0]) + torch.tensor([0.0, 5.0, -5.0])
    y = bn.train()(x)
    flat = y.reshape(-1, 3)
    torch.testing.assert_close(flat.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    # biased variance (what BN normalizes with) is 1 - eps/(var+eps) ≈ 1
    assert torch.allclose(flat.var(0, unbiased=False), torch.ones(3), atol=0.02)


def test_mc_dropout_stays_active_in_eval_mode_and_plain_dropout_does_not():
    model = build_model(
        layers({"type": "dropout", "rate": 0.5, "mc": True}, {"type": "dropout", "rate": 0.5}), (100,)
    )
    assert isinstance(model[0], MCDropout) and type(model[1]) is nn.Dropout
    model.eval()
    x = torch.ones(4, 100)
    assert (model[1](x) == x).all()
    assert (model[0](x) == 0).any()
    alpha = build_model(layers({"type": "alpha_dropout", "rate": 0.2, "mc": True}), (100,))[0]
    assert isinstance(alpha, MCAlphaDropout)
    assert not torch.equal(alpha.eval()(x), x)


def test_dense_without_bias_and_repeat_expansion():
    model = build_model(
        layers(
            {
                "type": "repeat",
                "count": 3,
                "layers": [{"type": "dense", "units": 5, "use_bias": False}, {"type": "batch_norm"}],
            }
        ),
        (5,),
    )
    assert len(model) == 6
    assert all(m.linear.bias is None for m in model if isinstance(m, Dense))


def test_build_model_rejects_a_bad_dict_spec():
    from trainwell.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.layers\[0\].units"):
        build_model(layers({"type": "dense", "units": 0}), (3,))
