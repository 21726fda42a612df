"""model.from = "@variant" in an experiment: resolved to that variant's run with the same seed index."""

from __future__ import annotations

import json

import pytest
import torch

from tests.experiments.conftest import write_experiment
from tests.transfer.conftest import BINARY, HIDDEN, SIGMOID, SOFTMAX3, config_dict
from trainwell.errors import ConfigError
from trainwell.experiments.runner import run_experiment
from trainwell.train.checkpoint import load_weights


def experiment(npz, source="@a", repeat=2) -> dict:
    return {
        "name": "reuse",
        "repeat": repeat,
        "base": config_dict(npz, SOFTMAX3),
        "variants": [
            {"name": "a", "description": "the source task"},
            {
                "name": "b",
                "description": "the target task, reusing a",
                "set": {
                    "data": BINARY,
                    "model": {"from": source, "layers": [*HIDDEN, SIGMOID]},
                    "train": {
                        "loss": "binary_crossentropy",
                        "epochs": 2,
                        "phases": [{"epochs": 2, "freeze": "reused"}],
                    },
                },
            },
        ],
    }


def test_each_seed_of_b_starts_from_the_same_seed_of_a(tmp_path, blob_npz):
    path = write_experiment(tmp_path / "e.toml", experiment(blob_npz))
    result = run_experiment(path, out=tmp_path / "out", progress=False, report=False)
    assert not result.failed
    for seed in (42, 43):
        run = tmp_path / "out" / f"b-seed{seed}"
        record = json.loads((run / "transfer.json").read_text())
        assert record["from"] == str(tmp_path / "out" / f"a-seed{seed}")
        a, b = load_weights(tmp_path / "out" / f"a-seed{seed}" / "model.pt"), load_weights(run / "model.pt")
        # a frozen copy of its own seed's source
        assert torch.equal(a["dense_2.linear.weight"], b["dense_2.linear.weight"])
    # a re-run finds every folder trained with the config it asks for (the resolved path), and skips them
    again = run_experiment(path, out=tmp_path / "out", progress=False, report=False)
    assert {o.action for o in again.outcomes} == {"skipped"}


@pytest.mark.parametrize(
    "source, message",
    [
        ("@zzz", r"variant 'b': model\.from: unknown variant 'zzz'"),
        ("@b", r"variant 'b': model\.from: '@b' is not an earlier variant; variants train in file order"),
    ],
)
def test_a_bad_variant_reference_is_a_config_error(tmp_path, blob_npz, source, message):
    path = write_experiment(tmp_path / "e.toml", experiment(blob_npz, source, repeat=1))
    with pytest.raises(ConfigError, match=message):
        run_experiment(path, out=tmp_path / "out", progress=False, report=False)
    assert not (tmp_path / "out").exists()
