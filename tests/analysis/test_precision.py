"""Low precision: 16-bit models equal torch's own cast model, int8 equals dynamic quantization written out by
hand, saved files reload to the same outputs, and the ``export`` command's table."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.analysis.test_fusion import randomize_
from tests.analysis.test_pruning import write_blobs_npz
from tests.conftest import small_config
from trainwell.analysis.precision import load_precision_model, to_precision
from trainwell.cli import main
from trainwell.config import validate_config
from trainwell.errors import ConfigError, TrainwellError
from trainwell.nn.build import build_model, split_output
from trainwell.runs import run_training

LAYERS = [
    {"type": "flatten"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 64, "activation": "elu"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 32, "activation": "relu"},
    {"type": "dense", "units": 5, "activation": "softmax"},
]
INPUT = (4, 4, 3)


def new_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return randomize_(build_model({"layers": LAYERS}, INPUT), seed)


def inputs(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *INPUT), generator=torch.Generator().manual_seed(seed))


def reload(model: nn.Module, skeleton: nn.Sequential, precision: str) -> nn.Sequential:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return load_precision_model(torch.load(buffer, weights_only=True), skeleton, precision)


def test_float32_is_an_identical_copy():
    model = new_model()
    copy32 = to_precision(model, "float32")
    assert copy32 is not model
    with torch.no_grad():
        assert torch.equal(copy32(inputs()), model(inputs()))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_16_bit_model_is_torchs_cast_model_with_float32_logits(precision):
    dtype = getattr(torch, precision)
    model = new_model()
    low = to_precision(model, precision)
    assert all(p.dtype == dtype for p in low.parameters())
    assert all(b.dtype == dtype for k, b in low.named_buffers() if "running" in k)
    assert set(low.state_dict()) == set(model.state_dict())  # same names: loads into the float32 layout
    x = inputs()
    with torch.no_grad():
        out = low(x)
        # the reference, built independently: the float32 model cast by torch, fed cast inputs, logits back
        # to float32 before the softmax
        cast = split_output(model)[0].to(dtype)
        want = F.softmax(cast(x.to(dtype)).float(), dim=-1)
        full = new_model()(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, want)
    # and close to float32: a few units of the 16-bit type's resolution on probabilities in [0, 1]
    assert (out - full).abs().max() < 32 * torch.finfo(dtype).eps
    with torch.no_grad():
        assert torch.equal(reload(low, model, precision)(x), out)


def dynamic_int8_by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 dynamic quantization (Jacob et al. 2018), written out: each weight row and each input
    row gets a scale max|v| / 127.5 (the half-width of int8's range [-128, 127]), values are rounded to
    integers in that range, multiplied in integers, and the products rescaled."""

    def quantize(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = (t.abs().amax(dim=-1, keepdim=True) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
        return torch.clamp(torch.round(t * (1.0 / scale)), -128, 127), scale

    wq, sw = quantize(w)
    xq, sx = quantize(x)
    return (xq @ wq.T) * sx * sw.T + b


def test_int8_is_dynamic_quantization_of_the_linear_layers():
    model = new_model()
    q = to_precision(model, "int8")
    x = inputs()
    # follow the float path layer by layer, replacing each dense layer's matmul with the hand-written int8 one
    h = model.flatten_1(x)
    with torch.no_grad():
        for name in ("batch_normalization_1", "dense_1", "batch_normalization_2", "dense_2", "dense_3"):
            module = getattr(model, name)
            if name.startswith("dense"):
                h = module.activation(dynamic_int8_by_hand(h, module.linear.weight, module.linear.bias))
            else:
                h = module(h)
        want = F.softmax(h, dim=-1)
        got = q(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert q.dense_1.linear.weight.qdata.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(reload(q, model, "int8")(x), got)
        assert (got - model(x)).abs().max() < 0.05  # and near the float32 model


def test_int8_file_is_about_a_quarter():
    torch.manual_seed(0)
    big = build_model(
        {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        },
        (16, 16, 3),
    )
    sizes = {}
    for precision in ("float32", "bfloat16", "int8"):
        buffer = io.BytesIO()
        torch.save(to_precision(big, precision).state_dict(), buffer)
        sizes[precision] = buffer.getbuffer().nbytes
    weights = 768 * 256 + 256 * 10
    assert abs(sizes["float32"] - 4 * weights) < 0.02 * 4 * weights
    assert abs(sizes["bfloat16"] - 2 * weights) < 0.02 * 2 * weights
    # one byte a weight plus a float32 scale per output unit and the float32 biases
    assert abs(sizes["int8"] - weights) < 0.05 * weights


def test_unknown_precision_and_missing_torchao_are_explained(monkeypatch):
    with pytest.raises(
        ConfigError,
        match=r"unknown precision 'int4' \(did you mean 'int8'\?\); valid precision "
        "names: bfloat16, float16, float32, int8",
    ):
        to_precision(new_model(), "int4")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if torchao were not installed
    with pytest.raises(
        TrainwellError, match=r"int8 export needs the torchao package .*`pip install torchao`"
    ):
        to_precision(new_model(), "int8")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("precision_run")
    config = small_config(
        {
            "dataset": "npz",
            "path": str(write_blobs_npz(folder / "blobs.npz")),
            "validation_size": 100,
            "scaling": "none",
        },
        epochs=2,
    )
    run_training(validate_config(config), out=folder / "run", progress=False)
    return folder / "run"


def test_export_command_table(tmp_path, trained_run, capsys):
    out = tmp_path / "export"
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--precision",
                "int8",
                "float16",
                "--runs",
                "2",
                "--threads",
                "1",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "export.json").read_text())
    rows = {r["precision"]: r for r in result["rows"]}
    assert list(rows) == ["float32", "float16", "int8"]  # float32 first, as the reference
    for precision, row in rows.items():
        assert row["file_bytes"] == (out / f"model-{precision}.pt").stat().st_size
        assert row["size_vs_float32"] == pytest.approx(row["file_bytes"] / rows["float32"]["file_bytes"])
        assert row["accuracy_change"] == pytest.approx(
            row["test_accuracy"] - rows["float32"]["test_accuracy"]
        )
        assert {"latency_ms_batch_1", "latency_ms_batch_1024", "speedup_batch_1"} <= set(row)
    assert rows["float32"]["speedup_batch_1"] == 1.0 and result["threads"] == 1
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--precision",
                "bfloat16",
                "--runs",
                "2",
                "--out",
                str(tmp_path / "e2"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "bfloat16" in printed and "median of 2 runs" in printed
    assert main(["export", str(trained_run), "--precision", "int4", "--out", str(tmp_path / "e3")]) == 2
    assert "unknown precision 'int4'" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--precision", "int8", "--runs", "-1"]) == 2
    assert "--runs must be ≥ 0" in capsys.readouterr().err
