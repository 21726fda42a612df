"""The two presets end to end on a slice of the real Fashion-MNIST: model B starts from model A's run of the
same seed, and the autoencoder's encoder becomes the classifier's lower layers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import real_data_dir
from trainwell.data.fashion_mnist import SYSTEM_FOLDERS
from trainwell.experiments.runner import run_experiment
from trainwell.experiments.spec import presets_dir

pytestmark = pytest.mark.integration


def _skip_without_fashion_mnist() -> None:
    data = real_data_dir()
    folders = [*SYSTEM_FOLDERS, *([data, data / "fashion-mnist"] if data else [])]
    if not any((f / "train-images-idx3-ubyte.gz").is_file() for f in folders):
        pytest.skip("Fashion-MNIST not found: install Debian's dataset-fashion-mnist or set TRAINWELL_DATA")


def _preset(name: str, tmp_path: Path, **changes) -> Path:
    preset = tomllib.loads((presets_dir() / f"{name}.toml").read_text()) | changes
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(preset))
    return path


def test_fashion_transfer_reuses_model_a_for_model_b(tmp_path):
    _skip_without_fashion_mnist()
    path = _preset(
        "fashion-transfer", tmp_path, repeat=1, quick={"data": {"limit_train": 2000}, "train": {"epochs": 2}}
    )
    result = run_experiment(path, quick=True, out=tmp_path / "exp", progress=False)
    assert not result.failed, [o.error for o in result.failed]
    exp = tmp_path / "exp"
    a_info = json.loads((exp / "model-a" / "run.json").read_text())
    assert len(a_info["classes"]) == 8 and not {"Sandal", "Shirt"} & set(a_info["classes"])
    assert json.loads((exp / "b-scratch" / "run.json").read_text())["classes"] == ["Sandal", "Shirt"]
    record = json.loads((exp / "b-transfer" / "transfer.json").read_text())
    assert record["from"] == str(exp / "model-a") and len(record["layers"]) == 6  # flatten + 5 hidden
    assert record["parameters"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 50 + 50 + 2 * (50 * 50 + 50)
    scratch = json.loads((exp / "b-scratch" / "metrics.json").read_text())
    assert scratch["test_accuracy"] > 0.9  # sandals and shirts are easy to tell apart, even from 200 images
    results = json.loads((exp / "results.json").read_text())
    assert {v["name"] for v in results["variants"]} == {
        "model-a",
        "b-scratch",
        "b-transfer",
        "b-transfer-zero-head",
    }


def test_autoencoder_pretraining_preset_pretrains_on_all_images(tmp_path):
    _skip_without_fashion_mnist()
    path = _preset("pretraining-autoencoder", tmp_path, repeat=1, quick={"train": {"epochs": 2}})
    result = run_experiment(path, quick=True, only=["pretrained"], out=tmp_path / "exp", progress=False)
    assert not result.failed, [o.error for o in result.failed]
    record = json.loads((tmp_path / "exp" / "pretrained" / "transfer.json").read_text())
    assert record["examples"] == 60000 - 5000  # every training image outside the validation split
    assert record["val_loss_after"] < 0.5 * record["val_loss_before"]
    metrics = json.loads((tmp_path / "exp" / "pretrained" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test_accuracy"] > 0.5  # chance is 0.1
