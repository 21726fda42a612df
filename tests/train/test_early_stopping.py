"""Early stopping driven by scripted metric sequences, checked against Keras 3's definition by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainwell.train.callbacks import EarlyStopping


class Trainer:
    stop_training = False


def drive(values: list[float], monitor: str = "val_loss", **kwargs):
    """Run the callback over ``values``; the model's single weight holds the epoch index of each epoch."""
    model = nn.Linear(1, 1, bias=False)
    callback = EarlyStopping(model, monitor=monitor, **kwargs)
    trainer = Trainer()
    stopped_after = None
    for epoch, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(epoch)
        callback.on_epoch_end(trainer, epoch, {monitor: value})
        if trainer.stop_training:
            stopped_after = epoch
            break
    callback.on_train_end(trainer)
    return callback, stopped_after, model.weight.item()


def test_keras_restore_example():
    # Keras's own test: losses [0.2, 0.15, 0.1, 0.11, 0.12], patience 2 → stops after epoch 4, restores epoch 2.
    callback, stopped, weight = drive([0.2, 0.15, 0.1, 0.11, 0.12], patience=2, restore_best_weights=True)
    assert stopped == 4 and callback.best_epoch == 2 and weight == 2.0


def test_without_restore_the_last_weights_stay():
    _, stopped, weight = drive([0.2, 0.15, 0.1, 0.11, 0.12], patience=2)
    assert stopped == 4 and weight == 4.0


def test_patience_zero_stops_at_the_first_non_improvement_but_never_at_epoch_zero():
    _, stopped, _ = drive([0.5, 0.6, 0.4], patience=0)
    assert stopped == 1


def test_min_delta_counts_small_gains_as_no_improvement():
    _, stopped, _ = drive([1.0, 0.999, 0.998, 0.997], patience=2, min_delta=0.01)
    assert stopped == 2


def test_accuracy_is_maximized():
    callback, stopped, weight = drive([0.5, 0.7, 0.6, 0.65], monitor="val_accuracy", patience=2,
                                      restore_best_weights=True)
    assert stopped == 3 and callback.best == 0.7 and weight == 1.0


def test_restore_happens_even_when_training_ends_without_stopping():
    callback, stopped, weight = drive([0.3, 0.1, 0.2], patience=5, restore_best_weights=True)
    assert stopped is None and weight == 1.0


def test_improvements_that_miss_the_baseline_do_not_reset_the_wait():
    # Keras: wait resets only on a value that beats both the best and the baseline, so with a baseline of 0.5
    # the wait keeps counting through the improvements 0.9 → 0.8 and patience runs out one epoch earlier.
    values = [0.9, 0.8, 0.85, 0.86]
    assert drive(values, patience=2, baseline=0.5)[1] == 2
    assert drive(values, patience=2)[1] == 3


def test_state_round_trip_continues_identically():
    model = nn.Linear(1, 1)
    a = EarlyStopping(model, patience=3, restore_best_weights=True)
    trainer = Trainer()
    for epoch, v in enumerate([0.5, 0.4, 0.45]):
        a.on_epoch_end(trainer, epoch, {"val_loss": v})
    b = EarlyStopping(model, patience=3, restore_best_weights=True)
    b.load_state_dict(a.state_dict())
    assert (b.wait, b.best, b.best_epoch) == (1, 0.4, 1)


@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_mode_comes_from_the_metric(monitor):
    assert EarlyStopping(nn.Linear(1, 1), monitor=monitor).mode == "min"
