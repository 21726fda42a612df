"""LR schedules: hand values of the chapter's formulas, torch's OneCycleLR as an oracle for 1cycle, a
transcription of Keras's ReduceLROnPlateau for performance scheduling, the callback driving param groups,
steps.csv, and resuming a scheduled run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tomli_w
import torch

from tests.conftest import blobs, small_config
from trainwell.config import TrainSpec, validate_config
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.train.checkpoint import load_checkpoint, save_checkpoint
from trainwell.train.loop import fit
from trainwell.train.optimizers import build_optimizer
from trainwell.train.schedules import (
    ExponentialSpec,
    LearningRateScheduler,
    OneCycleSpec,
    PerformanceSpec,
    PowerSpec,
    ReduceLROnPlateau,
    StepRecorder,
    build_schedule,
    exponential,
    one_cycle,
    piecewise_constant,
    power,
    schedule_callbacks,
)

# --- the pure functions: hand values -----------------------------------------------------------------------


def test_power_scheduling_hand_values():
    assert power(0, 0.01, s=20) == 0.01
    assert power(20, 0.01, s=20) == pytest.approx(0.005)  # halves after s steps (c = 1)
    assert power(60, 0.01, s=20) == pytest.approx(0.0025)  # η0/4 after 3s
    assert power(20, 0.01, s=20, c=2) == pytest.approx(0.0025)


def test_exponential_scheduling_hand_values():
    assert exponential(0, 0.01, s=20) == 0.01
    assert exponential(20, 0.01, s=20) == pytest.approx(0.001)  # tenfold every s
    assert exponential(40, 0.01, s=20) == pytest.approx(1e-4)
    assert exponential(10, 0.01, s=20) == pytest.approx(0.01 / math.sqrt(10))


def test_piecewise_constant_is_the_chapters_function():
    def chapter(epoch):  # the chapter's piecewise_constant_fn
        if epoch < 5:
            return 0.01
        elif epoch < 15:
            return 0.005
        return 0.001

    for t in range(25):
        assert piecewise_constant(t, [5, 15], [0.01, 0.005, 0.001]) == chapter(t)


def test_epoch_units_hold_the_value_through_each_epoch():
    per_epoch = 10
    by_epoch = build_schedule(PowerSpec(name="power", s=2), 0.1, per_epoch, 100)
    by_step = build_schedule(PowerSpec(name="power", s=2, unit="step"), 0.1, per_epoch, 100)
    assert [by_epoch.lr(t) for t in (0, 9, 10, 19, 20)] == [
        0.1,
        0.1,
        power(1, 0.1, 2),
        power(1, 0.1, 2),
        power(2, 0.1, 2),
    ]
    assert [by_step.lr(t) for t in (0, 9, 10)] == [0.1, power(9, 0.1, 2), power(10, 0.1, 2)]
    assert not by_epoch.stepwise and by_step.stepwise


# --- 1cycle ----------------------------------------------------------------------------------------------


def test_one_cycle_hand_values():
    total = 1000
    cycle = one_cycle(OneCycleSpec(name="one_cycle", max_lr=0.05), total)
    end_steps = total // 10 + 1  # the chapter's last_iterations
    half = (total - end_steps) // 2
    assert cycle.half == half == 449
    assert cycle.lr(0) == pytest.approx(0.005)  # η_max / 10
    assert cycle.lr(half) == pytest.approx(0.05)
    assert cycle.lr(2 * half) == pytest.approx(0.005)
    assert cycle.lr(total) == pytest.approx(0.005 / 1000)  # several orders of magnitude below
    assert cycle.lr(total + 500) == cycle.lr(total)  # clamped past the end
    assert (cycle.momentum(0), cycle.momentum(half), cycle.momentum(2 * half)) == pytest.approx(
        (0.95, 0.85, 0.95)
    )
    assert cycle.momentum(total - 1) == 0.95
    lrs = [cycle.lr(t) for t in range(total + 1)]
    assert max(lrs) == pytest.approx(0.05) and np.all(np.diff(lrs[: half + 1]) > 0)


@pytest.mark.parametrize("total", [100, 137, 1000])
def test_one_cycle_matches_torchs_three_phase_linear_one_cycle_lr(total):
    """torch's OneCycleLR with three_phase, linear annealing and the same endpoints, re-indexed: its phases
    end at pct·T' − 1, 2·pct·T' − 2 and T' − 1, ours at half, 2·half and total."""
    spec = OneCycleSpec(name="one_cycle", max_lr=0.3, start_lr=0.02, end_lr=1e-5)
    cycle = one_cycle(spec, total)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    oracle = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.3,
        total_steps=total + 1,
        pct_start=(cycle.half + 1) / (total + 1),
        anneal_strategy="linear",
        three_phase=True,
        div_factor=0.3 / 0.02,
        final_div_factor=0.02 / 1e-5,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    want_lr, want_m = [], []
    for _ in range(total + 1):
        want_lr.append(opt.param_groups[0]["lr"])
        want_m.append(opt.param_groups[0]["momentum"])
        p.grad = torch.zeros(1)
        opt.step()
        oracle.step()
    np.testing.assert_allclose([cycle.lr(t) for t in range(total + 1)], want_lr, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose([cycle.momentum(t) for t in range(total + 1)], want_m, rtol=1e-9)


def test_one_cycle_needs_enough_steps():
    with pytest.raises(ConfigError, match=r"train\.schedule: one_cycle needs at least"):
        one_cycle(OneCycleSpec(name="one_cycle", max_lr=0.1), 2)
    assert one_cycle(OneCycleSpec(name="one_cycle", max_lr=0.1), 3).half == 1


# --- the callback writes param groups ----------------------------------------------------------------------


def trainer(optimizer, epochs=2, steps_per_epoch=50, step=0):
    return SimpleNamespace(
        optimizer=optimizer, spec=SimpleNamespace(epochs=epochs), steps_per_epoch=steps_per_epoch, step=step
    )


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("sgd", lambda g: g["momentum"]),
        ("rmsprop", lambda g: g["momentum"]),
        ("nadam", lambda g: g["betas"][0]),
    ],
)
def test_one_cycle_cycles_the_momentum_the_registry_names(name, read):
    opt = build_optimizer({"name": name}, [torch.nn.Parameter(torch.zeros(1))])
    tr = trainer(opt)
    cb = LearningRateScheduler(OneCycleSpec(name="one_cycle", max_lr=0.05))
    cb.on_train_begin(tr)
    cycle = one_cycle(cb.spec, 100)
    for t in range(100):
        cb.on_step_begin(tr, t)
        assert opt.param_groups[0]["lr"] == cycle.lr(t)
        assert read(opt.param_groups[0]) == cycle.momentum(t)
    if name == "nadam":
        assert opt.param_groups[0]["betas"][1] == 0.999  # β2 untouched


def test_adagrad_has_no_momentum_to_cycle():
    opt = build_optimizer({"name": "adagrad"}, [torch.nn.Parameter(torch.zeros(1))])
    tr = trainer(opt)
    cb, rec = LearningRateScheduler(OneCycleSpec(name="one_cycle", max_lr=0.05)), StepRecorder()
    for c in (cb, rec):
        c.on_train_begin(tr)
    for t in range(3):
        cb.on_step_begin(tr, t)
        rec.on_step_begin(tr, t)
    assert rec.csv_text().splitlines()[1:] == [f"{t},{one_cycle(cb.spec, 100).lr(t)!r}," for t in range(3)]


def test_eta0_is_part_of_the_callback_state():
    """On resume the optimizer comes back holding a scheduled LR; η0 must come from the checkpoint."""
    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    cb = LearningRateScheduler(ExponentialSpec(name="exponential", s=1, unit="step"))
    cb.on_train_begin(trainer(opt))
    cb.on_step_begin(trainer(opt), 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    again = LearningRateScheduler(ExponentialSpec(name="exponential", s=1, unit="step"))
    again.load_state_dict(cb.state_dict())
    again.on_train_begin(trainer(opt, step=4))  # the optimizer says 1e-4; the state says 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


# --- performance scheduling: Keras's ReduceLROnPlateau --------------------------------------------------------


class KerasReduceLROnPlateau:
    """Transcribed from keras/src/callbacks/reduce_lr_on_plateau.py (Keras 3), minus logging."""

    def __init__(self, factor, patience, min_delta, cooldown, min_lr, mode):
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        if mode == "min":
            self.monitor_op, self.best = (lambda a, b: np.less(a, b - min_delta)), np.inf
        else:
            self.monitor_op, self.best = (lambda a, b: np.greater(a, b + min_delta)), -np.inf
        self.cooldown_counter = 0
        self.wait = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_epoch_end(self, current, lr):
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor_op(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and lr > np.float32(self.min_lr):
                lr = max(lr * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0
        return lr


@pytest.mark.parametrize("patience", [0, 1, 2, 5])
@pytest.mark.parametrize("cooldown", [0, 1, 3])
@pytest.mark.parametrize(
    ("monitor", "min_delta", "min_lr"),
    [("val_loss", 0.0, 0.0), ("val_loss", 0.05, 1e-3), ("val_accuracy", 0.02, 0.0)],
)
def test_performance_scheduling_is_keras_reduce_lr_on_plateau(patience, cooldown, monitor, min_delta, min_lr):
    rng = np.random.default_rng(patience * 7 + cooldown)
    values = np.cumsum(rng.normal(0, 0.1, size=60)) + 2.0  # a noisy random walk with plateaus
    mode = "min" if monitor == "val_loss" else "max"
    keras = KerasReduceLROnPlateau(0.5, patience, min_delta, cooldown, min_lr, mode)
    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    cb = ReduceLROnPlateau(
        PerformanceSpec(
            name="performance",
            monitor=monitor,
            factor=0.5,
            patience=patience,
            min_delta=min_delta,
            cooldown=cooldown,
            min_lr=min_lr,
        )
    )
    cb.on_train_begin(trainer(opt))
    lr, reductions = 0.1, 0
    for epoch, v in enumerate(values):
        cb.on_epoch_end(trainer(opt), epoch, {monitor: float(v)})
        new = keras.on_epoch_end(float(v), lr)
        reductions += new < lr
        lr = new
        assert opt.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-12), f"epoch {epoch}"
    assert reductions > 0  # the sequence exercised the rule


def test_the_chapters_performance_example():
    """factor 0.5, patience 5: after five epochs without improvement the LR halves."""
    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    cb = ReduceLROnPlateau(factor=0.5, patience=5)
    cb.on_train_begin(trainer(opt))
    lrs = []
    for epoch, v in enumerate([1.0, 0.9] + [0.95] * 6):
        cb.on_epoch_end(trainer(opt), epoch, {"val_loss": v})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [0.1] * 6 + [0.05, 0.05]  # epochs 3-7 do not improve: the 5th of them halves the LR


def test_performance_state_survives_a_weights_only_checkpoint(tmp_path):
    def run(cb, opt, values, start):
        for epoch, v in enumerate(values, start):
            cb.on_epoch_end(trainer(opt), epoch, {"val_loss": v})
        return opt.param_groups[0]["lr"]

    spec = PerformanceSpec(name="performance", factor=0.5, patience=2)
    values = [1.0, 1.0, 0.5, 0.6, 0.6, 0.7, 0.7, 0.7]
    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    full = ReduceLROnPlateau(spec)
    full.on_train_begin(trainer(opt))
    want = run(full, opt, values, 0)

    opt = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    first = ReduceLROnPlateau(spec)
    first.on_train_begin(trainer(opt))
    run(first, opt, values[:4], 0)
    torch.save({"cb": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = build_optimizer({"name": "sgd", "learning_rate": 0.1}, [torch.nn.Parameter(torch.zeros(1))])
    opt2.load_state_dict(saved["opt"])
    second = ReduceLROnPlateau(spec)
    second.load_state_dict(saved["cb"])  # before on_train_begin, as restore_state does
    second.on_train_begin(trainer(opt2))
    assert run(second, opt2, values[4:], 4) == want == 0.025


def test_performance_needs_its_metric():
    opt = build_optimizer({"name": "sgd"}, [torch.nn.Parameter(torch.zeros(1))])
    cb = ReduceLROnPlateau()
    cb.on_train_begin(trainer(opt))
    with pytest.raises(ConfigError, match=r"train\.schedule\.monitor: \"val_loss\" is not among"):
        cb.on_epoch_end(trainer(opt), 0, {"loss": 1.0})


# --- in fit: resume and steps.csv --------------------------------------------------------------------------

MODEL = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
SPEC = {
    "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
    "epochs": 3,
    "batch_size": 32,
    "device": "cpu",
    "compile": False,
}


class StopAfterEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            trainer.stop_training = True


def scheduled_fit(resume=None, extra=()):
    from trainwell.train.callbacks import Callback

    torch.manual_seed(0)
    model = build_model(MODEL, (4, 4, 3))
    callbacks = schedule_callbacks(OneCycleSpec(name="one_cycle", max_lr=0.1))
    stops = [type("Stop", (StopAfterEpoch, Callback), {})(e) for e in extra]
    state = fit(model, blobs(), TrainSpec.model_validate(SPEC), callbacks=callbacks + stops, resume=resume)
    return state, callbacks


def test_a_scheduled_run_resumed_from_a_checkpoint_file_is_the_uninterrupted_run(tmp_path):
    full, full_cbs = scheduled_fit()
    first, first_cbs = scheduled_fit(extra=[0])  # stops after epoch 1 of 3
    assert len(first.history) == 1
    first.stop_training = False  # the stop was this test's, not the run's own (e.g. early stopping)
    save_checkpoint(tmp_path / "checkpoint.pt", first, first_cbs)
    resumed, resumed_cbs = scheduled_fit(resume=load_checkpoint(tmp_path / "checkpoint.pt"))
    assert resumed_cbs[1].csv_text() == full_cbs[1].csv_text()  # every step's LR and momentum
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


@pytest.fixture
def npz_config(tmp_path: Path, blob_npz: Path):
    def make(**train):
        data = small_config(
            {"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"}, **train
        )
        path = tmp_path / "c.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    return make


def test_a_run_with_one_cycle_writes_every_step_to_steps_csv(tmp_path, npz_config):
    from trainwell.cli import main

    config = npz_config(
        epochs=2, optimizer={"name": "sgd", "momentum": 0.9}, schedule={"name": "one_cycle", "max_lr": 0.05}
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with open(tmp_path / "run" / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    steps_per_epoch = math.ceil(300 / 32)  # 400 samples, 100 for validation
    total = 2 * steps_per_epoch
    assert [int(r["step"]) for r in rows] == list(range(total))
    cycle = one_cycle(OneCycleSpec(name="one_cycle", max_lr=0.05), total)
    assert [float(r["lr"]) for r in rows] == [cycle.lr(t) for t in range(total)]
    assert [float(r["momentum"]) for r in rows] == [cycle.momentum(t) for t in range(total)]


def test_an_epoch_schedule_sets_each_epochs_lr(tmp_path, npz_config):
    from trainwell.cli import main

    config = npz_config(
        epochs=3, optimizer={"name": "sgd", "learning_rate": 0.1}, schedule={"name": "exponential", "s": 2}
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with open(tmp_path / "run" / "history.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([0.1 * 0.1 ** (e / 2) for e in range(3)], rel=1e-12)
    assert not (tmp_path / "run" / "steps.csv").exists()  # nothing changes within an epoch
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 3


def test_decay_runs_record_their_steps(tmp_path, npz_config):
    from trainwell.cli import main

    config = npz_config(epochs=1, optimizer={"name": "sgd", "learning_rate": 0.1, "decay": 0.01})
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with open(tmp_path / "run" / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1 / (1 + 0.01 * t) for t in range(len(rows))])
    assert rows[0]["momentum"] == "0.0"


# --- config errors -----------------------------------------------------------------------------------------


def config_error(**train) -> str:
    data = small_config({"dataset": "npz", "path": "x.npz", "validation_size": 0}, **train)
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    return str(e.value)


def test_schedule_config_errors_name_the_key():
    assert "train.schedule: values needs one more entry than boundaries" in config_error(
        schedule={"name": "piecewise_constant", "boundaries": [5, 15], "values": [0.1, 0.01]}
    )
    assert "did you mean 'exponential'" in config_error(schedule={"name": "exponentail", "s": 2})
    assert "train.schedule.s" in config_error(schedule={"name": "power", "s": 0})
    assert "train.optimizer.decay: Keras's decay is itself a schedule" in config_error(
        optimizer={"name": "sgd", "decay": 0.01}, schedule={"name": "power", "s": 20}
    )
    assert 'train.schedule.monitor: "val_loss" needs a validation set' in config_error(
        schedule={"name": "performance"}
    )
    assert '"auto" has no effect under one_cycle' in config_error(
        optimizer={"name": "sgd", "learning_rate": "auto"}, schedule={"name": "one_cycle", "max_lr": 0.1}
    )
