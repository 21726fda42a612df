"""The ``sparsity`` study: its configs and schedule, the answer from hand-made numbers, and one tiny study
on blobs whose sparsities and accuracies are recounted from the saved weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import blobs
from tests.experiments.conftest import tiny_experiment, write_experiment
from trainwell.analysis.pruning import polynomial_sparsity, should_prune
from trainwell.experiments.spec import load_experiment
from trainwell.experiments.studies.sparsity import (
    SPARSITY,
    SparsityParams,
    _answer,
    l1_config,
    plain_config,
    pruning_steps,
    sparsest_within,
)


def test_pruning_steps_land_on_a_mask_update_inside_training() -> None:
    # 939 steps, 0 .. 0.75: round(704.25) = 704, moved down onto the last multiple of 100: 700.
    assert pruning_steps(939, 0.0, 0.75, 100) == {"begin_step": 0, "end_step": 700, "frequency": 100}
    # 0.1 .. 0.5 of 50 steps = 5 .. 25: a 20-step range shrinks the frequency to 20.
    assert pruning_steps(50, 0.1, 0.5, 100) == {"begin_step": 5, "end_step": 25, "frequency": 20}
    for total, begin, end, freq in [(939, 0.0, 0.75, 100), (37, 0.2, 1.0, 7), (12, 0.0, 0.5, 5)]:
        s = pruning_steps(total, begin, end, freq)
        assert s["end_step"] < total
        # TF-MOT prunes at the end step, and there the polynomial schedule is at its final value.
        assert should_prune(s["end_step"], s["begin_step"], s["end_step"], s["frequency"])
        assert polynomial_sparsity(s["end_step"], 0.0, 0.9, s["begin_step"], s["end_step"]) == 0.9
    with pytest.raises(ValueError, match="at least 2 training steps"):
        pruning_steps(1, 0.0, 0.5, 10)


def test_configs_put_l1_on_every_kernel_and_take_pruning_off() -> None:
    base = {
        "model": {
            "layers": [
                {"type": "flatten"},
                {
                    "type": "repeat",
                    "count": 2,
                    "layers": [{"type": "dense", "units": 8, "kernel_regularizer": {"l1": 0.5, "l2": 0.01}}],
                },
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        "train": {"pruning": {"final_sparsity": 0.5, "end_step": 10}},
    }
    plain = plain_config(base)
    assert "pruning" not in plain["train"]
    regs = [layer.get("kernel_regularizer") for layer in plain["model"]["layers"] if layer["type"] == "dense"]
    assert regs == [{"l2": 0.01}, {"l2": 0.01}, None]  # the dense reference keeps l2, drops l1
    l1 = l1_config(base, 1e-4)
    regs = [layer["kernel_regularizer"] for layer in l1["model"]["layers"] if layer["type"] == "dense"]
    assert regs == [{"l2": 0.01, "l1": 1e-4}, {"l2": 0.01, "l1": 1e-4}, {"l1": 1e-4}]
    assert base["train"]["pruning"]["final_sparsity"] == 0.5  # the base is not changed


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sparsities": [0.5, 1.0]}, r"params\.sparsities: every sparsity must be in \(0, 1\).*got 1\.0"),
        (
            {"pruning_begin": 0.5, "pruning_end": 0.2},
            r"params\.pruning_end: pruning_end \(0\.2\) must be greater",
        ),
        (
            {"methods": ["l2"]},
            r"params\.methods\[0\]: Input should be 'l1', 'after_training' or 'during_training'",
        ),
        ({"l1_strengths": [0.0]}, r"params\.l1_strengths: every l1 strength must be > 0"),
    ],
)
def test_params_errors_name_the_key(params: dict, message: str) -> None:
    from trainwell.experiments.studies.base import validate_params

    with pytest.raises(ValueError, match=message):
        validate_params(SPARSITY, params, "analyses (q).params")


def _pt(method: str, setting: float, sparsity: float, accuracy: float, **extra: float) -> dict:
    return {"method": method, "setting": setting, "sparsity": sparsity, "test_accuracy": accuracy, **extra}


def test_answer_comes_from_the_numbers() -> None:
    records = {
        "dense": {"test_accuracy": 0.90},
        "test_examples": 10_000,
        "points": [
            _pt("l1", 1e-4, 0.40, 0.895, accuracy_as_trained=0.897),
            _pt("l1", 1e-3, 0.85, 0.86, accuracy_as_trained=0.87),
            _pt("after_training", 0.5, 0.5, 0.90, accuracy_before_finetune=0.89),
            _pt("after_training", 0.9, 0.9, 0.87, accuracy_before_finetune=0.60),
            _pt("during_training", 0.5, 0.5, 0.90),
            _pt("during_training", 0.9, 0.9, 0.893),
        ],
    }
    # Within 1 point of 90 %: l1 up to 40 %, after-training up to 50 %, during-training up to 90 %.
    best = sparsest_within(records["points"], 0.90, 0.01)
    assert {m: pt["sparsity"] for m, pt in best.items()} == {
        "l1": 0.4,
        "after_training": 0.5,
        "during_training": 0.9,
    }
    answer, agrees = _answer(records, SparsityParams())
    # The ways first, each with the sparsest model it produced, then the most accurate one when sparse.
    ways, core = answer.verdict.split(". Most accurate when sparse: ")
    assert ways == (
        "3 ways, each measured: ℓ1 regularization (up to 85.0 % sparse), pruned after training "
        "(up to 90.0 % sparse), pruned during training (up to 90.0 % sparse)"
    )
    assert core.startswith("pruned during training: 90.0 % sparse")
    assert agrees is True  # pruning (90 %) went sparser than l1 (40 %) at the same accuracy
    text = " ".join(answer.evidence)
    # during - after at 90 %: +2.3 points; noise 2·sqrt(2·0.8815·0.1185/10,000) = 0.91 points.
    assert "90.0 %: +2.3 points (beyond the ±0.9 points noise)" in text
    assert "+1.0 points to +27.0 points" in text  # the fine-tune's gains: 90-89 and 87-60

    # l1 sparser than both pruning methods at the same accuracy: the chapter's claim is contradicted.
    records["points"][1] = _pt("l1", 1e-3, 0.95, 0.899, accuracy_as_trained=0.899)
    answer, agrees = _answer(records, SparsityParams())
    assert answer.verdict.split(". Most accurate when sparse: ")[1].startswith(
        "ℓ1 regularization: 95.0 % sparse"
    )
    assert agrees is False
    # Two methods equally sparse within the tolerance: the more accurate one first, the other named too.
    records["points"][3] = _pt("after_training", 0.9, 0.9, 0.891, accuracy_before_finetune=0.60)
    records["points"][1] = _pt("l1", 1e-3, 0.85, 0.86, accuracy_as_trained=0.87)
    answer, _ = _answer(records, SparsityParams())
    assert answer.verdict.split(". Most accurate when sparse: ")[1] == (
        "pruned during training: 90.0 % sparse within 1.0 points of the dense model (89.3 %); "
        "pruned after training too (89.1 %)"
    )
    # Nothing within the tolerance: said so, and no claim settled.
    only_l1 = {"dense": {"test_accuracy": 0.90}, "test_examples": 10_000, "points": records["points"][:2]}
    answer, agrees = _answer(only_l1, SparsityParams(methods=["l1"], accuracy_tolerance=0.001))
    assert answer.verdict == (
        "1 way, each measured: ℓ1 regularization (up to 85.0 % sparse). "
        "Most accurate when sparse: none keeps the accuracy within 0.1 points at any measured sparsity"
    )
    assert agrees is None  # no pruning to hold l1 against


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        probs = model(torch.as_tensor(x)).numpy()
    return float((probs.argmax(1) == y).mean())


def test_tiny_study_counts_sparsity_from_the_saved_weights(tmp_path: Path, blob_npz: Path) -> None:
    from trainwell.experiments.runner import run_experiment
    from trainwell.runs import load_run_model
    from trainwell.train.checkpoint import load_weights

    data = tiny_experiment(blob_npz)
    data.pop("variants")
    data["analyses"] = [
        {
            "name": "sparse",
            "kind": "sparsity",
            "params": {
                "sparsities": [0.5, 0.8],
                "l1_strengths": [0.01],
                "threshold": 0.01,
                "frequency": 5,
                "finetune_epochs": 1,
            },
        }
    ]
    data["base"]["train"].pop("early_stopping")
    experiment = load_experiment(write_experiment(tmp_path / "s.toml", data))
    out = tmp_path / "out"
    result = run_experiment(experiment, out=out, progress=False)
    assert [o.action for o in result.analyses] == ["analysed"]
    folder = out / "sparse"
    records = json.loads((folder / "study.json").read_text())["records"]
    test = blobs(n=500, classes=3)  # the blob_npz test split, recomputed
    kernel_sizes = [16 * 48, 3 * 16]  # the two dense kernels of small_config on 4×4×3 inputs

    pts = {(p["method"], p["setting"]): p for p in records["points"]}
    assert set(pts) == {
        ("l1", 0.01),
        ("after_training", 0.5),
        ("after_training", 0.8),
        ("during_training", 0.5),
        ("during_training", 0.8),
    }
    for p in records["points"]:
        state = load_weights(folder / p["folder"] / "model.pt")
        kernels = [v for k, v in state.items() if k.endswith(".linear.weight")]
        assert [k.numel() for k in kernels] == kernel_sizes
        zeros = sum(int((k == 0).sum()) for k in kernels)
        assert p["sparsity"] == zeros / sum(kernel_sizes)
        if p["method"] != "l1":  # per-layer magnitude pruning: round(s · n) zeros in each kernel
            target = sum(round(p["setting"] * n) for n in kernel_sizes) / sum(kernel_sizes)
            assert p["sparsity"] == pytest.approx(target, abs=1e-12)
        model = load_run_model(folder / p["folder"])
        assert p["test_accuracy"] == pytest.approx(_accuracy(model, test.x_test, test.y_test), abs=1e-9)
    # l1: the zeroed model has exactly the trained l1 model's weights with |w| ≤ threshold at zero.
    trained = load_weights(folder / "l1-0.01" / "model.pt")
    small = sum(int((v.abs() <= 0.01).sum()) for k, v in trained.items() if k.endswith(".linear.weight"))
    assert pts[("l1", 0.01)]["sparsity"] == small / sum(kernel_sizes)
    assert pts[("l1", 0.01)]["sparsity_as_trained"] == small / sum(kernel_sizes)

    report = (out / "report.md").read_text()
    assert "Sparse models: ℓ1, pruning after training, pruning during training" in report
    for label in (
        "ℓ1 regularization",
        "pruned after training",
        "pruned during training",
        "dense (reference)",
    ):
        assert f"| {label} |" in report
    assert (out / "figures" / "sparse-accuracy-vs-sparsity.png").is_file()

    # Run again: the study is skipped (same fingerprint), nothing is retrained.
    again = run_experiment(experiment, out=out, progress=False)
    assert [o.action for o in again.analyses] == ["skipped"]


def test_study_is_registered() -> None:
    from trainwell.experiments.studies import STUDIES

    assert STUDIES["sparsity"] is SPARSITY


def test_the_preset_starts_from_the_chapter_fashion_mnist_net() -> None:
    from trainwell.experiments.spec import plan_analyses, plan_runs

    (chapter,) = plan_runs(load_experiment("fashion-mnist-chapter"), only=["leaky-relu"], repeat=1)
    for quick in (False, True):
        (planned,) = plan_analyses(load_experiment("sparse-models"), quick=quick)
        assert planned.analysis.kind == "sparsity"
        assert planned.config.data.dataset == "fashion_mnist"
        assert planned.data["model"] == chapter.data["model"]  # the 300-100 Leaky ReLU net, as resolved
        params = SparsityParams.model_validate(planned.params)
        assert params.methods == ["l1", "after_training", "during_training"] and len(params.sparsities) >= 3
