"""``trainwell diagnose``: JSON and table output, plots, experiments, exit codes."""

from __future__ import annotations

import json

import pytest
import tomli_w

from tests.conftest import small_config
from trainwell.analysis.diagnostics import diagnose
from trainwell.cli import main
from trainwell.config import validate_config

# Every weight 1: the units of a layer start identical and, since the layer above treats them alike too, get
# identical gradients and stay identical (the chapter's symmetry that backpropagation cannot break).
CONSTANT = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 8, "activation": "relu", "kernel_initializer": "ones"},
        {"type": "dense", "units": 3, "activation": "softmax", "kernel_initializer": "ones"},
    ]
}


@pytest.fixture
def config_file(blob_npz, tmp_path):
    data = small_config({"dataset": "npz", "path": str(blob_npz)}) | {"model": CONSTANT}
    path = tmp_path / "constant.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_json_lists_layers_and_findings_and_exits_0(config_file, capsys):
    assert main(["diagnose", str(config_file), "--steps", "4", "--probe-size", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 4 and result["probe_size"] == 50
    assert [layer["name"] for layer in result["layers"]] == ["dense_1", "dense_2"]
    first = result["layers"][0]
    assert first["activation"] == "relu" and first["units"] == 8
    assert set(first["init"]) >= {"output_mean", "output_std", "dead_units", "grad_rms", "symmetric_units"}
    assert first["after"]["symmetric_units"] == 8  # identical units stay identical through training
    assert result["layers"][1]["init"]["symmetric_units"] == 3
    assert result["layers"][1]["after"]["symmetric_units"] == 0  # the labels tell the output units apart
    assert result["layers"][1]["update_ratio_median"] > 0
    finding = next(f for f in result["findings"] if f["code"] == "symmetric_units")
    assert set(finding) == {"code", "layers", "evidence", "remedy"}
    assert (
        finding["layers"] == ["dense_1", "dense_2"] and "initialize the weights randomly" in finding["remedy"]
    )


def test_table_output_and_plots(config_file, tmp_path, capsys):
    assert main(["diagnose", str(config_file), "--steps", "2", "--plots", str(tmp_path / "plots")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "at initialization" in out and "after 2 training steps" in out
    assert "symmetric_units (dense_1, dense_2)" in out and "remedy:" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "activation_histograms.png",
        "activation_mean_std.png",
        "gradient_heatmap.png",
    ]


def test_steps_0_probes_at_initialization_only(config_file):
    diagnosis = diagnose(config_file, steps=0)
    assert diagnosis.steps == 0 and len(diagnosis.records) == 1
    assert "after" not in diagnosis.layers()[0]


def test_a_diverging_run_is_a_finding_not_an_error(blob_npz):
    data = small_config({"dataset": "npz", "path": str(blob_npz)})
    data["train"]["optimizer"] = {"name": "sgd", "learning_rate": 1e30}
    diagnosis = diagnose(
        validate_config(data), steps=60
    )  # more than an epoch: the loop checks the loss there
    assert diagnosis.note is not None and "training stopped" in diagnosis.note
    assert "exploding_gradients" in [f.code for f in diagnosis.findings]


def test_an_experiment_file_is_diagnosed_variant_by_variant(blob_npz, tmp_path, capsys):
    base = small_config({"dataset": "npz", "path": str(blob_npz)})
    base["train"]["optimizer"]["learning_rate"] = 1e-3  # updates of about 1e-3 of the weights: no finding
    experiment = {
        "name": "two",
        "base": base,
        "quick": {"train": {"epochs": 1}},
        "variants": [{"name": "elu"}, {"name": "constant", "set": {"model": CONSTANT}}],
    }
    path = tmp_path / "two.toml"
    path.write_text(tomli_w.dumps(experiment))
    assert main(["diagnose", str(path), "--steps", "2", "--json", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["variants"]) == ["elu", "constant"]
    assert result["variants"]["elu"]["findings"] == []
    assert "symmetric_units" in [f["code"] for f in result["variants"]["constant"]["findings"]]
    assert main(["diagnose", str(path), "--steps", "0", "--json", "--variant", "constant"]) == 0
    assert list(json.loads(capsys.readouterr().out)["variants"]) == ["constant"]


def test_user_errors(config_file, capsys):
    assert main(["diagnose", str(config_file), "--variant", "x"]) == 2
    assert "--variant and --quick apply to experiment files and presets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["diagnose", str(config_file), "--steps", "-1"])
    assert "must be >= 0, got -1" in capsys.readouterr().err
