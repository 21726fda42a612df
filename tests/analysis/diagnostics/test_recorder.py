"""The training callback: when it probes, what it writes, and that it changes nothing in training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import blobs, small_config
from trainwell.analysis.diagnostics.recorder import (
    RECORDS_FILE,
    DiagnosticsRecorder,
    DiagnosticsSpec,
    read_records,
)
from trainwell.config import TrainSpec, validate_config
from trainwell.errors import ConfigError, RunError
from trainwell.nn.build import build_model
from trainwell.runs import run_training
from trainwell.train.callbacks import Callback
from trainwell.train.loop import fit

MODEL = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 16, "kernel_initializer": "he_normal"},
        {"type": "batch_norm"},
        {"type": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def train_spec(**kw) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "optimizer": {"name": "nadam", "learning_rate": 1e-2},
            "epochs": 3,
            "batch_size": 32,
            "device": "cpu",
        }
        | kw
    )


def new_model():
    torch.manual_seed(0)
    return build_model(MODEL, (4, 4, 3))


def test_every_epoch_probes_at_init_each_epoch_and_the_end(tmp_path):
    data = blobs()
    path = tmp_path / RECORDS_FILE
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64], every="epoch", path=path)
    state = fit(new_model(), data, train_spec(), callbacks=[recorder])
    kinds = [(r["record"], r.get("moment"), r["step"], r["epoch"]) for r in recorder.records]
    spe = state.steps_per_epoch
    assert spe == 12

    # 5 updates measured in the middle of each epoch: steps 4..8 of 12 (positions 3..7 taken)
    def updates(e: int) -> list[tuple]:
        return [("update", None, e * spe + k, e) for k in range(4, 9)]

    assert kinds == [
        ("probe", "init", 0, 0),
        *updates(0),
        ("probe", "epoch", spe, 1),
        *updates(1),
        ("probe", "epoch", 2 * spe, 2),
        *updates(2),
        ("probe", "epoch", 3 * spe, 3),  # no second probe at the end: the weights are those just probed
    ]
    assert read_records(path) == recorder.records  # one JSON line per record, in order
    assert recorder.records[0]["layers"][0]["name"] == "dense_1"


class RestoreAtEnd(Callback):
    """Like early stopping's restore_best_weights: puts other weights in at the end of training."""

    def on_train_end(self, trainer):
        with torch.no_grad():
            trainer.model.dense_1.linear.weight.mul_(0.5)


def test_a_last_probe_when_weights_change_at_the_end():
    data = blobs()
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64])
    fit(new_model(), data, train_spec(epochs=2), callbacks=[RestoreAtEnd(), recorder])
    probes = [r for r in recorder.records if r["record"] == "probe"]
    assert [p["moment"] for p in probes] == ["init", "epoch", "epoch", "end"]
    assert probes[-1]["step"] == probes[-2]["step"]
    assert probes[-1]["layers"][0]["weight_norm"] == pytest.approx(probes[-2]["layers"][0]["weight_norm"] / 2)


def test_every_n_steps_and_several_measured_updates():
    data = blobs()
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64], every=7, update_steps=2)
    fit(new_model(), data, train_spec(epochs=1), callbacks=[recorder])  # 12 steps
    probes = [r["step"] for r in recorder.records if r["record"] == "probe"]
    update_steps = [r["step"] for r in recorder.records if r["record"] == "update"]
    assert probes == [0, 7, 12]
    assert update_steps == [3, 4, 10, 11]  # the middle 2 of each 7 steps (positions 2, 3 taken)
    assert all(
        set(r["layers"]) == {"dense_1", "dense_2"} for r in recorder.records if r["record"] == "update"
    )


def test_recording_changes_nothing_in_training():
    data = blobs()
    plain = fit(new_model(), data, train_spec())
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64], every=3, update_steps=2)
    probed = fit(new_model(), data, train_spec(), callbacks=[recorder])
    assert [r["loss"] for r in probed.history] == [r["loss"] for r in plain.history]
    for a, b in zip(plain.model.state_dict().values(), probed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # weights and BN statistics bit for bit


def test_update_record_is_the_relative_change_of_that_step():
    data = blobs()
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64], every=1, update_steps=1)
    model = new_model()
    w0 = model.dense_1.linear.weight.detach().clone()

    class Capture(recorder.__class__.__bases__[0]):  # a plain Callback
        def on_step_end(self, trainer, step):
            if step == 1:
                self.w1 = trainer.model.dense_1.linear.weight.detach().clone()

    capture = Capture()
    fit(model, data, train_spec(epochs=1), callbacks=[recorder, capture])
    expected = ((capture.w1 - w0).norm() / w0.norm()).item()
    update = next(r for r in recorder.records if r["record"] == "update")
    assert update["step"] == 1 and update["layers"]["dense_1"] == pytest.approx(expected, rel=1e-6)


def test_read_records_skips_a_torn_last_line_and_refuses_a_damaged_one(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_text('{"record": "update", "step": 1, "epoch": 0, "layers": {}}\n{"record": "pro')
    assert [r["step"] for r in read_records(path)] == [1]
    path.write_text('{"rec\n{"record": "update", "step": 1, "epoch": 0, "layers": {}}\n')
    with pytest.raises(
        RunError, match=r"diagnostics.jsonl: line 1 is not a JSON record; the file is damaged"
    ):
        read_records(path)


def test_records_are_strict_json_even_when_training_diverges(tmp_path):
    data = blobs()
    path = tmp_path / RECORDS_FILE
    model = new_model()
    with torch.no_grad():
        model.dense_1.linear.weight[0, 0] = math.inf
    recorder = DiagnosticsRecorder(data.x_train[:64], data.y_train[:64], path=path)
    recorder.on_train_begin(type("S", (), {"model": model, "step": 0, "epoch": 0})())
    line = path.read_text().splitlines()[0]
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_config_accepts_epoch_or_a_step_count():
    assert DiagnosticsSpec.model_validate({}).every == "epoch"
    assert DiagnosticsSpec.model_validate({"every": 50}).every == 50
    cfg = validate_config(
        small_config({"dataset": "npz", "path": "x.npz"}, diagnostics={"every": 10, "probe_size": 64})
    )
    assert cfg.train.diagnostics == DiagnosticsSpec(every=10, probe_size=64)
    for bad, message in ((0, "train.diagnostics.every"), ("week", "train.diagnostics.every")):
        with pytest.raises(ConfigError, match=message):
            validate_config(small_config({"dataset": "npz", "path": "x.npz"}, diagnostics={"every": bad}))


def test_a_run_with_diagnostics_writes_diagnostics_jsonl(blob_npz, tmp_path):
    config = validate_config(
        small_config(
            {"dataset": "npz", "path": str(blob_npz), "validation_size": 50},
            diagnostics={"every": "epoch", "probe_size": 40},
        )
    )
    result = run_training(config, out=tmp_path / "run", progress=False)
    records = read_records(result.run_dir / RECORDS_FILE)
    probes = [r for r in records if r["record"] == "probe"]
    assert [p["moment"] for p in probes] == ["init", "epoch", "epoch"]
    assert {p["probe_size"] for p in probes} == {40}
