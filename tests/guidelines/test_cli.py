"""``trainwell new``, ``trainwell recipes`` and ``trainwell advise`` end to end: output, JSON, exit codes."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from trainwell.cli import main
from trainwell.config import load_config
from trainwell.guidelines.recipes import RECIPES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEW_ARGS = ["--max-lr", "0.01"]  # skip the LR finder: these tests do not read the data


def test_recipes_lists_every_recipe(capsys):
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(RECIPES)
    assert all(r["summary"] and r["guideline"].startswith("Géron") for r in rows)
    assert main(["recipes"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_new_writes_a_config_that_loads_and_advise_finds_no_warnings(recipe, tmp_path, capsys):
    path = tmp_path / f"{recipe}.toml"
    assert main(["new", str(path), "--recipe", recipe, *NEW_ARGS]) == 0
    assert f"trainwell train {path}" in capsys.readouterr().out
    load_config(path)
    assert main(["advise", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["warning"] == 0, report["findings"]


def test_new_refuses_to_overwrite_without_force(tmp_path, capsys):
    path = tmp_path / "cfg.toml"
    path.write_text("# keep me\n")
    assert main(["new", str(path), *NEW_ARGS]) == 2
    assert "the file exists" in capsys.readouterr().err
    assert path.read_text() == "# keep me\n"
    assert main(["new", str(path), "--force", *NEW_ARGS]) == 0
    assert tomllib.loads(path.read_text())["data"]["dataset"] == "cifar10"


def test_new_with_bad_options_exits_2_and_names_the_option(tmp_path, capsys):
    assert main(["new", str(tmp_path / "a.toml"), "--classes", "7", *NEW_ARGS]) == 2
    assert "--classes: cifar10 has 10 classes" in capsys.readouterr().err
    assert (
        main(
            [
                "new",
                str(tmp_path / "b.toml"),
                "--dataset",
                "npz",
                "--input-shape",
                "4,x",
                "--classes",
                "3",
                "--data-path",
                "x.npz",
                *NEW_ARGS,
            ]
        )
        == 2
    )
    assert "--input-shape: expected integers" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_new_for_own_data(tmp_path, capsys):
    path = tmp_path / "own.toml"
    assert (
        main(
            [
                "new",
                str(path),
                "--recipe",
                "self-normalizing",
                "--dataset",
                "npz",
                "--data-path",
                "d.npz",
                "--input-shape",
                "8,8",
                "--classes",
                "4",
                "--depth",
                "6",
                "--units",
                "32",
                *NEW_ARGS,
            ]
        )
        == 0
    )
    config = load_config(path)
    assert config.data.dataset == "npz" and str(config.data.path) == "d.npz"
    assert config.model.layers[1].count == 6 and config.model.layers[1].layers[0].units == 32


def test_advise_prints_findings_for_people(capsys):
    assert main(["advise", str(EXAMPLES / "cifar10_baseline.toml")]) == 0
    out = capsys.readouterr().out
    assert "2 warning(s)" in out and "deep_net_without_batch_norm" in out and "fix:" in out
    assert "Table 11-3" in out


def test_advise_json_is_only_the_document(capsys):
    assert (
        main(
            [
                "advise",
                str(EXAMPLES / "cifar10_baseline.toml"),
                "--json",
                "--set",
                "train.optimizer.name=adagrad",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    rules = {f["rule"] for f in report["findings"]}
    assert "adagrad" in rules and "adaptive_optimizer" not in rules
    assert set(report["findings"][0]) == {"rule", "severity", "where", "message", "guideline", "fix"}
    assert report["counts"] == {
        s: sum(f["severity"] == s for f in report["findings"]) for s in ("warning", "info")
    }


def test_advise_on_a_config_with_no_findings(tmp_path, capsys):
    data = tomllib.loads((EXAMPLES / "cifar10_baseline.toml").read_text())
    data["model"]["layers"][1]["count"] = 3  # shallow: no BN needed
    data["train"]["optimizer"] = {"name": "sgd", "momentum": 0.9, "nesterov": True}
    data["train"]["schedule"] = {"name": "exponential", "s": 20}
    path = tmp_path / "ok.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["advise", str(path)]) == 0
    assert "no findings" in capsys.readouterr().out


def test_advise_on_an_invalid_config_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\ndataset = "cifar10"\n[model]\nlayers = [{ type = "dense", units = 0 }]\n')
    assert main(["advise", str(path)]) == 2
    assert "model.layers[0].units" in capsys.readouterr().err
    assert main(["advise", str(tmp_path / "missing.toml")]) == 2
