"""The diagnostics presets, and the findings on them and on the CIFAR-10 exercise's variants (real data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import real_data_dir
from trainwell.analysis.diagnostics.diagnosis import diagnose, diagnose_experiment
from trainwell.config import load_config
from trainwell.errors import DataError
from trainwell.experiments.spec import load_experiment, plan_runs

PRESETS = ("saturation-glorot-bengio", "dying-relu", "selu-self-normalization")
ROOT = Path(__file__).resolve().parents[3]
CIFAR_CONFIGS = {
    "baseline": ROOT / "examples" / "cifar10_baseline.toml",
    "bn": Path(__file__).parent / "configs" / "cifar10_bn.toml",
    "selu": Path(__file__).parent / "configs" / "cifar10_selu.toml",
}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_valid_and_record_diagnostics(name):
    experiment = load_experiment(name)
    assert experiment.spec.description.strip()
    for quick in (False, True):
        runs = plan_runs(experiment, quick=quick)
        assert len(runs) >= 3
        assert all(run.config.train.diagnostics is not None for run in runs)


@pytest.mark.parametrize("path", CIFAR_CONFIGS.values(), ids=CIFAR_CONFIGS.keys())
def test_cifar10_variant_configs_are_valid(path):
    assert load_config(path).model.layers


def codes(diagnosis) -> list[str]:
    return [f.code for f in diagnosis.findings]


def evidence(diagnosis, code: str) -> str:
    return next(f.evidence for f in diagnosis.findings if f.code == code)


@pytest.fixture
def fashion_mnist():
    try:
        load_experiment("dying-relu")  # the presets read Fashion-MNIST from its usual places
        from trainwell.data import dataset_info

        dataset_info("fashion_mnist")
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not found: {e}")


@pytest.mark.integration
def test_selu_preset_at_initialization(fashion_mnist):
    found = diagnose_experiment("selu-self-normalization", quick=True, steps=0)
    assert codes(found["selu-lecun"]) == []
    assert codes(found["selu-he"]) == ["not_self_normalizing"]
    he = evidence(found["selu-he"], "not_self_normalizing")
    assert (
        "τ = fan_in·E[w²] ≈ 2" in he and "kernel_initializer" in he
    )  # measured, and selfnorm's config check
    assert codes(found["selu-unstandardized"]) == ["not_self_normalizing"]
    assert "inputs are not standardized" in evidence(found["selu-unstandardized"], "not_self_normalizing")
    assert "dead_units" in codes(found["relu-he"])


@pytest.mark.integration
def test_dying_relu_preset(fashion_mnist):
    found = diagnose_experiment("dying-relu", quick=True, steps=100)
    assert "dead_units" in codes(found["relu"])
    assert "dead_units" not in codes(found["elu"])
    assert codes(found["relu-small-lr"]) == []
    dead = {
        name: sum(layer["after"].get("dead_units", 0) for layer in d.layers()) for name, d in found.items()
    }
    assert dead["leaky-relu"] < dead["relu"]  # leaky units get stuck for a while, far fewer of them


@pytest.mark.integration
def test_saturation_preset(fashion_mnist):
    found = diagnose_experiment("saturation-glorot-bengio", quick=True, steps=100)
    assert "saturation" in codes(found["sigmoid-normal"])
    assert "vanishing_gradients" not in codes(found["sigmoid-normal"])
    assert "saturation" not in codes(found["sigmoid-glorot"])
    assert "vanishing_gradients" in codes(found["sigmoid-glorot"])
    assert codes(found["tanh-glorot"]) == []


@pytest.mark.integration
def test_cifar10_exercise_variants():
    data = real_data_dir()
    if data is None or not (data / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real CIFAR-10 not found: set TRAINWELL_DATA to the folder holding cifar10-jpeg.tar.gz")
    # a slice of the training set is enough for a probe and 50 steps
    found = {
        name: diagnose(path, steps=50, overrides=["data.limit_train=5000"])
        for name, path in CIFAR_CONFIGS.items()
    }
    assert codes(found["baseline"]) == []
    assert codes(found["bn"]) == []
    selu = found["selu"]
    assert "not_self_normalizing" not in [f.code for f in selu.findings if f.evidence.startswith("at init")]
