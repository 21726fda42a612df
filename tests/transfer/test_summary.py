"""`trainwell summary` shows what the first phase freezes and where the reused layers come from."""

from __future__ import annotations

import json

import tomli_w

from tests.transfer.conftest import SOFTMAX3, config_dict
from trainwell.cli import main


def test_summary_marks_the_frozen_layers_and_lists_the_phases(tmp_path, blob_npz, capsys):
    data = config_dict(
        blob_npz,
        SOFTMAX3,
        model={"from": "runs/a", "reuse": 3},
        phases=[{"epochs": 2, "freeze": "reused"}, {"epochs": 3, "learning_rate": 1e-4}],
    )
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["summary", str(path), "--json"]) == 0  # the source folder is not needed to show the plan
    summary = json.loads(capsys.readouterr().out)
    assert [layer["frozen"] for layer in summary["layers"]] == [False, True, True, False, False, False]
    # trainable: dense_2 (16·8 + 8) and dense_3 (8·3 + 3); frozen: dense_1 (48·16 + 16), BN's γ, β and the
    # moving mean and variance (4·16), counted as non-trainable as Keras does
    assert summary["trainable"] == 16 * 8 + 8 + 8 * 3 + 3
    assert summary["non_trainable"] == 48 * 16 + 16 + 4 * 16
    assert summary["transfer"] == [
        "reused: the first 3 layers, copied from runs/a",
        "phase 1: 2 epochs, learning rate 0.05, the first 3 layers frozen",
        "phase 2: 3 epochs, learning rate 0.0001, nothing frozen",
    ]
    assert main(["summary", str(path)]) == 0
    assert "dense_1 (frozen)" in capsys.readouterr().out
