"""TensorBoard logging: the event files hold exactly the history's numbers, in Keras's layout, and a resumed
run does not show an epoch twice."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainwell.train.tensorboard import SCALARS, TensorBoard, tensorboard_available

pytestmark = pytest.mark.skipif(
    not tensorboard_available(), reason="the tensorboard package is not installed (pip install -e '.[dev]')"
)


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), purge_orphaned_data=True)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def scripted_epochs(tb: TensorBoard, rows: list[dict[str, float]], done: int = 0) -> None:
    trainer = SimpleNamespace(epoch=done)
    tb.on_train_begin(trainer)
    for row in rows:
        tb.on_epoch_end(trainer, int(row["epoch"]) - 1, row)
        trainer.epoch += 1
    tb.on_train_end(trainer)


ROWS = [
    {
        "epoch": e,
        "loss": 2.0 / e,
        "accuracy": 0.1 * e,
        "val_loss": 2.5 / e,
        "val_accuracy": 0.09 * e,
        "lr": 1e-3 * 0.5**e,
        "seconds": 1.5 + e,
    }
    for e in (1, 2, 3)
]


def test_every_history_value_is_a_scalar_in_kerass_layout(tmp_path):
    scripted_epochs(TensorBoard(tmp_path / "tb"), ROWS)
    train, valid = read_scalars(tmp_path / "tb" / "train"), read_scalars(tmp_path / "tb" / "validation")
    for key, (run, tag) in SCALARS.items():
        got = (train if run == "train" else valid)[tag]
        assert [s for s, _ in got] == [1, 2, 3]
        assert [v for _, v in got] == pytest.approx([r[key] for r in ROWS], rel=1e-6)  # stored as float32
    assert set(valid) == {"epoch_loss", "epoch_accuracy"}


def test_a_resumed_run_purges_the_epochs_it_trains_again(tmp_path):
    first = [dict(r) for r in ROWS]
    scripted_epochs(
        TensorBoard(tmp_path / "tb"), first
    )  # epochs 1-3 logged, but say the checkpoint has 1 only
    again = [dict(r, loss=r["loss"] + 10) for r in ROWS[1:]]
    scripted_epochs(TensorBoard(tmp_path / "tb"), again, done=1)
    losses = read_scalars(tmp_path / "tb" / "train")["epoch_loss"]
    assert [s for s, _ in losses] == [1, 2, 3]
    assert [v for _, v in losses] == pytest.approx([ROWS[0]["loss"], again[0]["loss"], again[1]["loss"]])


def test_a_run_logs_to_its_tb_folder(tmp_path, blob_npz):
    from tests.conftest import small_config
    from trainwell.config import validate_config
    from trainwell.runs import run_training

    config = validate_config(
        small_config(
            {"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"}, epochs=2
        )
    )
    result = run_training(config, out=tmp_path / "run", progress=False)
    with open(result.run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    valid = read_scalars(result.run_dir / "tb" / "validation")
    assert [v for _, v in valid["epoch_accuracy"]] == pytest.approx(
        [float(r["val_accuracy"]) for r in history]
    )
