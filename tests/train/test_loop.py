"""The training loop on tiny synthetic data: it learns, it is deterministic, and what it reports is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import blobs
from trainwell.config import TrainSpec
from trainwell.nn.build import build_model
from trainwell.train.checkpoint import checkpoint_dict
from trainwell.train.loop import evaluate, fit

MODEL = {"layers": [
    {"type": "flatten"},
    {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.1},
    {"type": "dense", "units": 3, "activation": "softmax"},
]}


def train_spec(**kw) -> TrainSpec:
    return TrainSpec.model_validate({"optimizer": {"name": "nadam", "learning_rate": 1e-2}, "epochs": 3,
                                     "batch_size": 32, "device": "cpu"} | kw)


def new_model(spec=MODEL, seed=0):
    torch.manual_seed(seed)
    return build_model(spec, (4, 4, 3))


def test_evaluate_matches_a_numpy_cross_entropy():
    data = blobs()
    model = new_model()
    probs = model.eval()(torch.as_tensor(data.x_test)).detach().numpy().astype(np.float64)
    expected_loss = -np.mean(np.log(probs[np.arange(len(probs)), data.y_test]))
    expected_acc = np.mean(probs.argmax(1) == data.y_test)
    got = evaluate(model, data.x_test, data.y_test, batch_size=7)  # batch size not dividing n
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(expected_acc)


def test_fit_learns_blobs_and_records_history():
    data = blobs()
    state = fit(new_model(), data, train_spec(epochs=4))
    h = state.history
    assert [row["epoch"] for row in h] == [1, 2, 3, 4]
    assert set(h[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert h[-1]["loss"] < h[0]["loss"]
    assert h[-1]["val_accuracy"] > 0.9  # chance is 1/3
    assert state.step == 4 * int(np.ceil(len(data.x_train) / 32))
    assert h[0]["lr"] == 1e-2


def test_same_seed_same_history_bit_for_bit():
    data = blobs()
    a = fit(new_model(), data, train_spec())
    b = fit(new_model(), data, train_spec())
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result():
    data = blobs()
    full = fit(new_model(), data, train_spec(epochs=4))
    first = fit(new_model(), data, train_spec(epochs=2))
    ckpt = checkpoint_dict(first, [])
    # a different initial model and RNG state: everything must come from the checkpoint
    torch.manual_seed(123)
    resumed = fit(new_model(seed=7), data, train_spec(epochs=4), resume=ckpt)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_l2_penalty_is_in_the_loss_as_keras_defines_it():
    spec = {"layers": [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax",
                                               "kernel_regularizer": {"l1": 0.01, "l2": 0.1}}]}
    data = blobs()
    model = new_model(spec)
    w = model[1].linear.weight.detach().double()
    probs = model.eval()(torch.as_tensor(data.x_test)).detach().double().numpy()
    ce = -np.mean(np.log(probs[np.arange(len(probs)), data.y_test]))
    expected = ce + 0.01 * w.abs().sum().item() + 0.1 * (w**2).sum().item()  # full l2·Σw², not half
    assert evaluate(model, data.x_test, data.y_test)["loss"] == pytest.approx(expected, rel=1e-5)


def test_max_norm_holds_after_every_step():
    spec = {"layers": [{"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu",
                                               "kernel_initializer": {"name": "random_normal", "stddev": 1.0},
                                               "kernel_constraint": {"max_norm": 0.5}},
                       {"type": "dense", "units": 3, "activation": "softmax"}]}
    model = new_model(spec)
    assert model[1].linear.weight.norm(dim=1).max() > 0.5  # the constraint has work to do
    fit(model, blobs(), train_spec(epochs=1))
    norms = model[1].linear.weight.norm(dim=1)
    assert norms.max().item() <= 0.5 + 1e-6


def test_nan_loss_stops_with_a_clear_error():
    from trainwell.errors import TrainingError

    data = blobs()
    data.x_train[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match=r"epoch 1.*learning rate.*trainwell diagnose"):
        fit(new_model(), data, train_spec(epochs=1))


class StopAtStep:
    """A step callback that asks the loop to stop after optimizer step ``at`` (as a signal handler would)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer, step):
        if step == self.at:
            trainer.stop_training = True


def test_resume_in_the_middle_of_an_epoch_gives_the_uninterrupted_result():
    from trainwell.train.callbacks import Callback

    class Stop(StopAtStep, Callback):
        pass

    data = blobs()
    full = fit(new_model(), data, train_spec(epochs=3))
    steps = int(np.ceil(len(data.x_train) / 32))
    stopped = fit(new_model(), data, train_spec(epochs=3), callbacks=[Stop(steps + 5)])  # 5 steps into epoch 2
    assert stopped.interrupted and stopped.epoch == 1 and stopped.epoch_step == 5 and len(stopped.history) == 1
    ckpt = checkpoint_dict(stopped, [])
    torch.manual_seed(99)  # the dropout RNG must come from the checkpoint too
    resumed = fit(new_model(seed=3), data, train_spec(epochs=3), resume=ckpt)
    assert not resumed.interrupted
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_a_last_batch_of_one_is_merged_when_the_model_has_batch_norm():
    from trainwell.train.loop import steps_per_epoch

    bn_model = build_model({"layers": [{"type": "flatten"}, {"type": "batch_norm"},
                                       {"type": "dense", "units": 3, "activation": "softmax"}]}, (4, 4, 3))
    assert steps_per_epoch(65, 32, bn_model) == 2  # 32 + 33, not 32 + 32 + 1
    assert steps_per_epoch(65, 32, new_model()) == 3  # without BN, Keras's partial batch of 1 stays
    assert steps_per_epoch(64, 32, bn_model) == 2 and steps_per_epoch(1, 32, bn_model) == 1
    data = blobs(n=600)  # 360 training examples; batch 359 leaves a single example
    state = fit(bn_model, data, train_spec(epochs=1, batch_size=359))
    assert state.step == 1 and state.epoch_seen == 360
