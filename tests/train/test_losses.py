"""The mse loss (autoencoder pretraining): Keras's mean squared error, checked against NumPy by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from tests.conftest import ArrayDataset
from trainwell.config import TrainSpec
from trainwell.train.loop import evaluate, fit
from trainwell.train.losses import LOSSES


def test_mse_is_the_mean_over_outputs_then_examples():
    y_hat = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    # example 1: (0 + 4 + 9) / 3; example 2: (1 + 1 + 1) / 3; mean over the two
    expected = ((0 + 4 + 9) / 3 + 1.0) / 2
    loss = LOSSES["mse"]
    assert float(loss.fn(torch.tensor(y_hat), torch.tensor(y))) == np.float32(expected)
    assert float(loss.sum_fn(torch.tensor(y_hat), torch.tensor(y))) / 2 == np.float32(expected)
    assert loss.correct is None and loss.output == "linear"


def test_evaluate_and_fit_report_mse_without_an_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = np.stack([x[:, 0] + x[:, 1], x[:, 2]], axis=1).astype(np.float32)  # a linear map: learnable
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        expected = float(((model(torch.tensor(x)) - torch.tensor(y)) ** 2).mean())
    result = evaluate(model, x, y, loss="mse", batch_size=7)  # uneven batches: sums, then one division
    assert math.isclose(result["loss"], expected, rel_tol=1e-6) and math.isnan(result["accuracy"])
    spec = TrainSpec.model_validate(
        {
            "loss": "mse",
            "epochs": 20,
            "optimizer": {"name": "sgd", "learning_rate": 0.1},
            "device": "cpu",
            "compile": False,
        }
    )
    state = fit(model, ArrayDataset(x, y, x[:10], y[:10], x[:0], y[:0]), spec)
    assert state.history[-1]["loss"] < 0.1 * state.history[0]["loss"]
    assert all(math.isnan(row["accuracy"]) and math.isnan(row["val_accuracy"]) for row in state.history)
