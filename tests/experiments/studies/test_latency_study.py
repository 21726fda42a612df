"""The ``low_latency`` study: its architecture changes, the answer from hand-made timings, and one tiny
study on blobs whose steps are recounted from the saved weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import blobs
from tests.experiments.conftest import tiny_experiment, write_experiment
from trainwell.errors import ConfigError
from trainwell.experiments.spec import load_experiment
from trainwell.experiments.studies.latency import (
    LOW_LATENCY,
    _answer,
    keep_hidden,
    replace_hidden_activations,
    speedup,
)

DENSE = {"type": "dense", "units": 8, "use_bias": False}
BN = {"type": "batch_norm"}
ELU = {"type": "activation", "activation": {"name": "elu"}}
OUTPUT = {"type": "dense", "units": 3, "activation": {"name": "softmax"}}
BN_LAYERS = [
    {"type": "flatten"},
    BN,
    {"type": "repeat", "count": 3, "layers": [DENSE, BN, ELU]},
    OUTPUT,
]
LEAKY = {"name": "leaky_relu", "alpha": 0.2}


def test_keep_hidden_keeps_the_first_blocks_and_the_output() -> None:
    assert keep_hidden(BN_LAYERS, 1) == [{"type": "flatten"}, BN, DENSE, BN, ELU, OUTPUT]
    assert keep_hidden(BN_LAYERS, 2) == [{"type": "flatten"}, BN, DENSE, BN, ELU, DENSE, BN, ELU, OUTPUT]
    with pytest.raises(ConfigError, match=r"params.hidden_layers = 3, but the base model has 3 hidden dense"):
        keep_hidden(BN_LAYERS, 3)


def test_replace_hidden_activations_leaves_linear_and_output_alone() -> None:
    layers = [
        {"type": "flatten"},
        {"type": "dense", "units": 8, "activation": {"name": "elu"}},
        {"type": "dense", "units": 8},  # linear: stays linear (a BN may follow it)
        ELU,
        OUTPUT,
    ]
    out = replace_hidden_activations(layers, LEAKY)
    assert out[1]["activation"] == LEAKY
    assert "activation" not in out[2]
    assert out[3] == {"type": "activation", "activation": LEAKY}
    assert out[4] == OUTPUT
    assert layers[1]["activation"] == {"name": "elu"}  # the input is not changed


def _step(name: str, accuracy: float, ms: dict[int, float], **extra: str) -> dict:
    step = {
        "step": name,
        "test_accuracy": accuracy,
        "latency": {str(b): {"median_ms": t} for b, t in ms.items()},
    }
    return step | extra


def test_answer_comes_from_the_timings() -> None:
    records = {
        "batch_sizes": [1, 1024],
        "steps": [
            _step("baseline", 0.50, {1: 1.0, 1024: 40.0}),
            _step("fewer layers", 0.51, {1: 0.4, 1024: 20.0}),
            _step("fold BN", 0.51, {1: 0.3, 1024: 19.0}),
            _step("Leaky ReLU", 0.50, {1: 0.3, 1024: 18.0}),
            _step("sparse", 0.49, {1: 0.3, 1024: 18.5}),
            _step("sparse, CSR", 0.49, {1: 0.32, 1024: 30.0}, variant_of="sparse"),
            _step("bfloat16", 0.49, {1: 0.6, 1024: 6.0}, precision="bfloat16", variant_of="sparse"),
            _step("int8", 0.48, {1: 1.5, 1024: 37.0}, precision="int8", variant_of="sparse"),
        ],
    }
    assert speedup(records["steps"][4], records["steps"][0], 1024) == 40.0 / 18.5
    answer, agrees = _answer(records)
    # Steps 2-5: 1.0 / 0.3 = 3.3× at batch 1, 40 / 18.5 = 2.2× at 1024, 49 % - 50 %: -1.0 points;
    # bfloat16 at 1024: 40 / 6 = 6.7×, more than 10 % above 2.2×.
    assert answer.verdict == (
        "steps 2–5 together: 3.3× faster at batch 1, 2.2× faster at batch 1024, for -1.0 points of test "
        "accuracy; at batch 1024, bfloat16 is fastest (6.7×)"
    )
    text = "\n".join(answer.evidence)
    assert (
        "fewer layers: 2.50× faster than baseline at batch 1, 2.00× faster than baseline at batch 1024"
        in text
    )
    # The CSR and precision rows are compared with the sparse model, not with the row before them.
    assert (
        "sparse, CSR: about as fast as sparse at batch 1, slower than sparse at batch 1024 (0.62× its speed)"
        in text
    )
    assert "int8: slower than sparse at batch 1 (0.20× its speed), slower than sparse at batch 1024" in text
    assert "bfloat16: slower than sparse at batch 1 (0.50× its speed), 3.08× faster than sparse" in text
    # fewer layers, fold BN (1.33× at batch 1) and bfloat16 helped: 3 of 7; Leaky ReLU (0.3/0.3, 19/18 = 1.06),
    # sparse and CSR (0.3/0.32 = 0.94, 18.5/30) did not; int8 was slower at both batch sizes.
    assert "3 of 7 steps made the model faster" in text and "1 made it slower at every batch size" in text
    assert agrees is False
    # With the test-set size known, a drop beyond two standard errors is named: sparse 50 % -> 40 % is
    # 10 points, against 2 · sqrt(2 · 0.4 · 0.6 / 10,000) = 1.4; the 1-point drops stay unnamed.
    records["test_examples"] = 10_000
    records["steps"][4]["test_accuracy"] = 0.40
    answer, _ = _answer(records)
    assert answer.verdict.endswith("; the sparse step cost the most accuracy (-10.0 points)")
    records["steps"][4]["test_accuracy"] = 0.49
    assert "cost the most" not in _answer(records)[0].verdict


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).numpy().argmax(1) == y).mean())


def test_tiny_study_steps_are_measured_and_ordered(tmp_path: Path, blob_npz: Path) -> None:
    from trainwell.experiments.runner import run_experiment
    from trainwell.runs import load_run_config, load_run_model
    from trainwell.train.checkpoint import load_weights

    data = tiny_experiment(blob_npz)
    data.pop("variants")
    data["base"]["model"]["layers"] = BN_LAYERS
    data["analyses"] = [
        {
            "name": "fast",
            "kind": "low_latency",
            "params": {
                "hidden_layers": 1,
                "sparsity": 0.5,
                "precisions": ["bfloat16"],
                "batch_sizes": [64, 1],
                "latency_runs": 3,
            },
        }
    ]
    experiment = load_experiment(write_experiment(tmp_path / "l.toml", data))
    out = tmp_path / "out"
    result = run_experiment(experiment, out=out, progress=False)
    assert [o.action for o in result.analyses] == ["analysed"]
    folder = out / "fast"
    steps = json.loads((folder / "study.json").read_text())["records"]["steps"]
    names = ["baseline", "fewer layers", "fold BN", "Leaky ReLU", "sparse", "sparse, CSR", "bfloat16"]
    assert [s["step"] for s in steps] == names
    # Hidden dense layers and BN layers: 3 and 1 + 3, then 1 and 1 + 1, then no BN once folded.
    assert [(s["dense_layers"] - 1, s["batch_norms"]) for s in steps] == [(3, 4), (1, 2)] + [(1, 0)] * 5
    for s in steps:
        assert set(s["latency"]) == {"1", "64"}
        assert all(t["runs"] == 3 and t["median_ms"] > 0 for t in s["latency"].values())
    # The Leaky ReLU run was trained with Leaky ReLU and no ELU.
    layers = load_run_config(folder / "leaky-relu").model.model_dump(mode="json")["layers"]
    activations = [ly["activation"]["name"] for ly in layers if ly["type"] == "activation"]
    assert activations == ["leaky_relu"]
    # Folding is exact up to float rounding: the folded model classifies the test set as the unfolded one.
    test = blobs(n=500, classes=3)
    unfolded = load_run_model(folder / "fewer-layers")
    folded = load_run_model(folder / "fewer-layers-folded")
    with torch.no_grad():
        x = torch.as_tensor(test.x_test)
        assert torch.allclose(folded(x), unfolded(x), atol=1e-5)
    assert steps[2]["test_accuracy"] == steps[1]["test_accuracy"]
    # The sparse step: half of each kernel (rounded) is zero in the saved weights, and its accuracy is the
    # saved model's.
    state = load_weights(folder / "sparse" / "model.pt")
    kernels = [v for k, v in state.items() if k.endswith(".linear.weight")]
    assert [k.numel() for k in kernels] == [8 * 48, 3 * 8]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    assert steps[4]["sparsity"] == zeros / (8 * 48 + 3 * 8) == (192 + 12) / (8 * 48 + 3 * 8)
    sparse = load_run_model(folder / "sparse")
    assert steps[4]["test_accuracy"] == pytest.approx(_accuracy(sparse, test.x_test, test.y_test), abs=1e-9)
    # CSR kernels compute the same products (to float rounding); bfloat16 keeps 8 significant bits.
    assert steps[5]["test_accuracy"] == steps[4]["test_accuracy"]
    assert abs(steps[6]["test_accuracy"] - steps[4]["test_accuracy"]) <= 0.03

    report = (out / "report.md").read_text()
    rows = [
        line.split(" | ")[0].removeprefix("| ")
        for line in report.splitlines()
        if line.startswith("| ") and ". " in line.split(" | ")[0]
    ]
    assert rows == [f"{i}. {n}" for i, n in zip([1, 2, 3, 4, 5, "5′", 6], names, strict=True)]
    assert "ms @ 1 | speed-up @ 1 | ms @ 64 | speed-up @ 64" in report
    assert (out / "figures" / "fast-latency.png").is_file()


def test_csr_kernels_give_the_same_outputs() -> None:
    from trainwell.analysis.pruning import prune_model
    from trainwell.experiments.studies.latency import CSRLinear, with_csr_kernels
    from trainwell.nn.build import ModelSpec, build_model

    spec = ModelSpec.model_validate(
        {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 16, "activation": "elu"},
                {"type": "dense", "units": 8, "use_bias": False},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        }
    )
    torch.manual_seed(0)
    model, _ = prune_model(build_model(spec, (4, 4, 3)).eval(), 0.8)
    csr = with_csr_kernels(model)
    linears = [m for m in csr.modules() if isinstance(m, CSRLinear)]
    assert len(linears) == 3 and all(m.weight.layout == torch.sparse_csr for m in linears)
    # CSR stores only the nonzeros: 20 % of each kernel (round(0.8 · n) pruned per layer).
    assert [m.weight.values().numel() for m in linears] == [48 * 16 - 614, 16 * 8 - 102, 8 * 3 - 19]
    x = torch.randn(10, 4, 4, 3)
    with torch.no_grad():
        assert torch.allclose(csr(x), model(x), atol=1e-6)
    assert model.dense_1.linear.weight.layout == torch.strided  # the source model is not changed


def test_study_is_registered() -> None:
    from trainwell.experiments.studies import STUDIES

    assert STUDIES["low_latency"] is LOW_LATENCY


def test_the_preset_starts_from_the_cifar10_bn_model() -> None:
    from trainwell.experiments.spec import plan_analyses, plan_runs
    from trainwell.experiments.studies.latency import LowLatencyParams

    exercise = {p.folder: p.data for p in plan_runs(load_experiment("cifar10-exercise"))}
    for quick in (False, True):
        (planned,) = plan_analyses(load_experiment("low-latency"), quick=quick)
        assert planned.analysis.kind == "low_latency"
        assert planned.data["model"] == exercise["bn"]["model"]  # exercise 8's BN model, as resolved
        params = LowLatencyParams.model_validate(planned.params)
        # 5 of the 20 hidden blocks of (dense, BN, ELU), after the flatten and the input BN.
        kept = keep_hidden(planned.data["model"]["layers"], params.hidden_layers)
        assert [ly["type"] for ly in kept] == [
            "flatten",
            "batch_norm",
            *["dense", "batch_norm", "activation"] * 5,
            "dense",
        ]
