"""BN folding by equivalence: folded outputs vs original outputs on random weights AND random BN statistics,
for BN after a linear dense layer, BN first, BN after an activation, across flatten and dropout; exact in
float64, to float32 rounding in float32. And the ``fuse`` command end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.analysis.test_pruning import write_blobs_npz
from tests.conftest import small_config
from trainwell.analysis.fusion import (
    bn_scale_shift,
    count_batch_norms,
    fold_batch_norms,
    fuse_bn_linear_weights,
)
from trainwell.cli import main
from trainwell.config import load_config, validate_config
from trainwell.errors import ConfigError
from trainwell.nn.build import ModelSpec, build_model, split_output
from trainwell.nn.layers import BatchNorm
from trainwell.runs import run_training

BN = {"type": "batch_norm"}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BN statistics (means ≠ 0, variances ≠ 1, γ ≠ 1, β ≠ 0), so a fold that
    ignored any of them would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 3 + 0.1)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model.eval()


ARCHITECTURES = {
    "chapter: flatten, BN first, BN after ELU dense layers": [
        {"type": "flatten"},
        BN,
        {"type": "dense", "units": 30, "activation": "elu"},
        BN,
        {"type": "dense", "units": 20, "activation": "elu"},
        BN,
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
    "BN after linear dense layers, before the activation": [
        {"type": "flatten"},
        BN,
        {"type": "dense", "units": 30},
        BN,
        {"type": "elu"},
        {"type": "dense", "units": 20, "use_bias": False},
        BN,
        {"type": "leaky_relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
    "BN without gamma or beta, across dropout, two BNs in a row": [
        {"type": "flatten"},
        {"type": "batch_norm", "scale": False},
        {"type": "dense", "units": 30, "activation": "selu"},
        {"type": "batch_norm", "center": False},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 20},
        BN,
        BN,
        {"type": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
    "BN on channels-last images before flatten": [
        BN,
        {"type": "flatten"},
        {"type": "dense", "units": 30, "activation": "tanh"},
        BN,
        {"type": "alpha_dropout", "rate": 0.1},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
}
INPUT = (4, 4, 3)


@pytest.mark.parametrize("layers", list(ARCHITECTURES.values()), ids=list(ARCHITECTURES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_folded_model_computes_what_the_original_computes(layers, dtype):
    spec = ModelSpec.model_validate({"layers": layers})
    for seed in range(3):
        torch.manual_seed(seed)
        model = randomize_(build_model(spec, INPUT), seed).to(dtype)
        before = copy.deepcopy(model.state_dict())
        folded, folded_spec = fold_batch_norms(model, spec, INPUT)
        assert count_batch_norms(folded) == 0 and count_batch_norms(model) > 0
        assert all(layer.type != "batch_norm" for layer in folded_spec.layers)
        assert all(
            torch.equal(v, before[k]) for k, v in model.state_dict().items()
        )  # the original is untouched
        assert not folded.training
        # the folded spec builds the folded architecture: same names and shapes
        rebuilt = build_model(folded_spec, INPUT).state_dict()
        assert {k: v.shape for k, v in rebuilt.items()} == {
            k: v.shape for k, v in folded.state_dict().items()
        }

        x = torch.randn((64, *INPUT), generator=torch.Generator().manual_seed(100 + seed), dtype=dtype) * 3
        with torch.no_grad():
            want, got = split_output(model)[0](x), split_output(folded)[0](x)  # logits
        scale = want.abs().max().item()
        if dtype == torch.float64:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * scale)  # the algebra is exact
        else:  # a few float32 roundings of values of this size: 64 ulps of the largest logit
            torch.testing.assert_close(got, want, rtol=0, atol=64 * torch.finfo(torch.float32).eps * scale)


def test_bn_before_linear_math_alone():
    g = torch.Generator().manual_seed(3)
    scale, shift = (
        torch.randn(7, generator=g, dtype=torch.float64),
        torch.randn(7, generator=g, dtype=torch.float64),
    )
    w, b = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    x = torch.randn(11, 7, generator=g, dtype=torch.float64)
    fw, fb = fuse_bn_linear_weights(scale, shift, w, b)
    torch.testing.assert_close(x @ fw.T + fb, (scale * x + shift) @ w.T + b, rtol=0, atol=1e-12)
    fw, fb = fuse_bn_linear_weights(scale, shift, w, None)  # a dense layer without bias gets one
    torch.testing.assert_close(x @ fw.T + fb, (scale * x + shift) @ w.T, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="a linear layer with 7 inputs cannot follow a BN of 3 features"):
        fuse_bn_linear_weights(scale[:3], shift[:3], w, b)


def test_bn_scale_shift_is_the_inference_formula():
    bn = randomize_(BatchNorm(6, epsilon=0.01), 4).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    s, t = bn_scale_shift(bn)
    expected = (x - bn.running_mean) / torch.sqrt(
        bn.running_var + 0.01
    ) * bn.weight + bn.bias  # Keras's formula
    torch.testing.assert_close(s * x + t, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [
                {"type": "flatten"},
                {"type": "dense", "units": 8, "activation": "relu"},
                BN,
                {"type": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "cannot fold batch_normalization_1: activation_1 stands between it and the next dense layer",
        ),
        (
            [
                {"type": "flatten"},
                {"type": "dense", "units": 8, "activation": "relu"},
                BN,
                {"type": "dropout", "rate": 0.2, "mc": True},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "cannot fold batch_normalization_1: dropout_1 stands between",
        ),
    ],
)
def test_a_bn_that_cannot_fold_is_named(layers, message):
    spec = ModelSpec.model_validate({"layers": layers})
    model = randomize_(build_model(spec, INPUT))
    with pytest.raises(ConfigError, match=message):
        fold_batch_norms(model, spec, INPUT)


def test_a_trailing_bn_and_a_training_model_are_refused():
    spec = ModelSpec.model_validate(
        {"layers": [{"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"}, BN]}
    )
    model = randomize_(build_model(spec, INPUT))
    with pytest.raises(ConfigError, match="cannot fold batch_normalization_1: no dense layer follows it"):
        fold_batch_norms(model, spec, INPUT)
    with pytest.raises(ValueError, match=r"inference mode: call model.eval\(\) first"):
        fold_batch_norms(model.train(), spec, INPUT)


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the chapter's BN architecture on blobs, trained once for this module's tests."""
    folder = tmp_path_factory.mktemp("bn_run")
    data = small_config(
        {
            "dataset": "npz",
            "path": str(write_blobs_npz(folder / "blobs.npz")),
            "validation_size": 100,
            "scaling": "none",
        },
        epochs=2,
    )
    data["model"]["layers"] = ARCHITECTURES["chapter: flatten, BN first, BN after ELU dense layers"]
    run_training(validate_config(data), out=folder / "run", progress=False)
    return folder / "run"


def test_fuse_command_writes_a_folded_run_that_evaluates_and_exports(tmp_path, bn_run, capsys):
    out = tmp_path / "folded"
    assert main(["fuse", str(bn_run), "--out", str(out), "--runs", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    config = load_config(out / "config.toml")  # a resolved config of the folded architecture
    assert [layer.type for layer in config.model.layers] == ["flatten", "dense", "dense", "dense"]
    assert all(layer.use_bias for layer in config.model.layers[1:])
    assert result["batch_norms_folded"] == 3
    assert result["test_accuracy"] == result["source_test_accuracy"]
    assert result["max_output_difference"] < 1e-5
    assert [(r["model"], r["batch_size"]) for r in result["latency"]] == [
        ("original", 1),
        ("folded", 1),
        ("original", 1024),
        ("folded", 1024),
    ]
    assert all(r["runs"] == 3 and r["median_ms"] > 0 for r in result["latency"])
    state = torch.load(out / "model.pt", weights_only=True)
    assert not any("batch_normalization" in k for k in state)
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == result["test_accuracy"]
    assert (
        main(
            [
                "export",
                str(out),
                "--precision",
                "bfloat16",
                "--runs",
                "0",
                "--out",
                str(tmp_path / "exp"),
                "--json",
            ]
        )
        == 0
    )
    assert [r["precision"] for r in json.loads(capsys.readouterr().out)["rows"]] == ["float32", "bfloat16"]


def test_fuse_prints_a_latency_table(tmp_path, bn_run, capsys):
    assert main(["fuse", str(bn_run), "--out", str(tmp_path / "f"), "--runs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "median of 2 runs" in printed and "folded" in printed and "1024" in printed
