"""Experiment fixtures: a tiny experiment file on blobs (trains in seconds) and a hand-made experiment folder
(for report tests that need no training at all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import small_config

DROPOUT_LAYERS = [
    {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


def tiny_experiment(npz: Path, **extra) -> dict:
    """Two variants of a small dense net on the blobs: plain, and with dropout + MC dropout."""
    base = small_config(
        {"dataset": "npz", "path": str(npz), "validation_size": 100, "scaling": "none"},
        epochs=3,
        early_stopping={"patience": 1, "restore_best_weights": True},
    )
    return {
        "name": "tiny",
        "description": "Blobs, two variants.",
        "base": base,
        "quick": {"train": {"epochs": 2}},
        "variants": [
            {"name": "plain", "description": "The plain net."},
            {
                "name": "dropout",
                "description": "With dropout.",
                "mc_dropout": 20,
                "set": {"model": {"layers": DROPOUT_LAYERS}},
            },
        ],
        **extra,
    }


def write_experiment(path: Path, data: dict) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def tiny_file(tmp_path: Path, blob_npz: Path) -> Path:
    return write_experiment(tmp_path / "tiny.toml", tiny_experiment(blob_npz))


def _history(epochs: int, start: float, gain: float, seconds: float) -> str:
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"]
    for e in range(1, epochs + 1):
        acc = min(0.95, start + gain * e)
        lines.append(f"{e},{2.0 - acc},{acc + 0.02},{2.1 - acc},{acc},0.001,{seconds}")
    return "\n".join(lines) + "\n"


def fake_experiment(root: Path, seeds: int = 1) -> Path:
    """An experiment folder written by hand, as `trainwell run` would leave it: three variants (one with MC
    dropout, a step schedule and an LR-finder sweep), with known numbers."""
    root.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "fake",
        "description": "A hand-made study.",
        "reference_source": "the test",
        "base": {
            "data": {"dataset": "npz", "path": "x.npz", "validation_size": 1000},
            "model": {
                "layers": [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}]
            },
        },
        "variants": [
            {"name": "base", "description": "The baseline <b>net</b>.", "reference": {"val_accuracy": 0.5}},
            {"name": "fast", "description": "Converges fast.", "question": "Is *fast* faster?"},
            {"name": "mc", "description": "MC dropout.", "mc_dropout": 10, "compare_to": "base"},
        ],
    }
    (root / "experiment.toml").write_text(tomli_w.dumps(spec))
    runs = {}
    # base: +2 points per epoch from 30 %, 10 epochs of 2 s; fast: +10 points per epoch, 5 epochs of 3 s.
    shapes = {"base": (10, 0.30, 0.02, 2.0), "fast": (5, 0.30, 0.10, 3.0), "mc": (8, 0.30, 0.025, 2.5)}
    for name, (epochs, start, gain, seconds) in shapes.items():
        for k in range(seeds):
            seed = 42 + k
            folder = name if seeds == 1 else f"{name}-seed{seed}"
            d = root / folder
            d.mkdir()
            jitter = 0.01 * k
            (d / "history.csv").write_text(_history(epochs, start + jitter, gain, seconds))
            best = min(0.95, start + jitter + gain * epochs)
            metrics = {
                "best_epoch": epochs,
                "epochs_run": epochs,
                "val_loss": 2.1 - best,
                "val_accuracy": best,
                "test_loss": 2.0 - best,
                "test_accuracy": best - 0.01,
                "train_seconds": epochs * seconds,
                "seconds_per_epoch": seconds,
                "samples_per_second": 1000.0,
                "learning_rate": 0.001,
            }
            (d / "metrics.json").write_text(json.dumps(metrics))
            (d / "run.json").write_text(
                json.dumps(
                    {
                        "status": "finished",
                        "device": "cpu",
                        "torch": "2.x",
                        "data_source": "/data/x.npz (npz)",
                    }
                )
            )
            config = {
                "data": {"dataset": "npz", "validation_size": 1000, "scaling": "unit"},
                "model": spec["base"]["model"],
                "train": {
                    "optimizer": {"name": "nadam", "learning_rate": 0.001},
                    "batch_size": 32,
                    "epochs": 10,
                },
            }
            (d / "config.toml").write_text(tomli_w.dumps(config))
            if name == "fast":
                (d / "steps.csv").write_text(
                    "step,lr,momentum\n"
                    + "".join(f"{s},{0.001 * (1 + s)},{0.95 - 0.01 * s}\n" for s in range(10))
                )
                lrs = [1e-6 * 10 ** (i / 10) for i in range(60)]
                (d / "lr_finder.json").write_text(
                    json.dumps(
                        {
                            "suggested_lr": lrs[40] / 10,
                            "min_loss_lr": lrs[40],
                            "lrs": lrs,
                            "raw_losses": [0.0] * 60,
                            "losses": [
                                2.3 - 0.02 * min(i, 40) + (0.3 * (i - 40) if i > 40 else 0) for i in range(60)
                            ],
                            "stopped_early": True,
                            "settings": {},
                        }
                    )
                )
            if name == "mc":
                valid = {
                    "samples": 10,
                    "seed": seed,
                    "examples": 1000,
                    "accuracy": best,
                    "mc_accuracy": best + 0.03,
                    "turned_right": 50,
                    "turned_wrong": 20,
                    "log_loss": 1.5,
                    "mc_log_loss": 1.4,
                    "mean_entropy": 1.0,
                    "mc_mean_entropy": 1.1,
                    "mc_mean_std": 0.05,
                    "mc_seconds": 0.2,
                    "accuracy_by_samples": [
                        {"samples": s, "accuracy": best + 0.003 * s} for s in (1, 2, 5, 10)
                    ],
                    "entropy_histogram": {
                        "edges": [0.0, 0.5, 1.0],
                        "correct": [300, 200],
                        "wrong": [100, 400],
                    },
                }
                (d / "mc_dropout.json").write_text(
                    json.dumps(
                        {"samples": 10, "seed": seed, "valid": valid, "test": dict(valid, examples=1000)}
                    )
                )
            runs[folder] = {"variant": name, "seed": seed, "status": "trained", "current": True}
    (root / "experiment.json").write_text(
        json.dumps({"name": "fake", "quick": False, "runs": runs, "last_invocation": {"seconds": 123.0}})
    )
    return root
