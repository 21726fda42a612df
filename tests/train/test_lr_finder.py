"""The LR finder: its sweep, smoothing and rule by hand; it leaves model and optimizer bit for bit as found;
``learning_rate = "auto"`` runs it and records the result; ``trainwell lr-find`` prints and plots it."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

from tests.conftest import blobs, real_data_dir, small_config
from trainwell.cli import main
from trainwell.config import TrainSpec
from trainwell.nn.build import build_model, split_output
from trainwell.train.losses import LOSSES
from trainwell.train.lr_finder import LRFinderSpec, find_lr, smooth, suggest, sweep_lr
from trainwell.train.optimizers import build_optimizer
from trainwell.train.step import make_step

MODEL = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 16, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "dropout", "rate": 0.2},  # consumes torch's RNG: the finder must restore it
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def test_sweep_is_geometric_from_start_to_end():
    lrs = [sweep_lr(i, 61, 1e-6, 10.0) for i in range(61)]
    assert lrs[0] == 1e-6 and lrs[-1] == pytest.approx(10.0)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([10 ** (7 / 60)] * 60)  # 7 decades in 60 equal factors


def test_smoothing_is_a_bias_corrected_moving_average():
    # by hand, β = 0.5: a1 = 0.5·2 = 1 → 1/(1−0.5) = 2; a2 = 0.5·1 + 0.5·4 = 2.5 → 2.5/0.75 = 3.333…
    assert smooth([2.0, 4.0], 0.5) == pytest.approx([2.0, 10 / 3])
    assert smooth([3.0] * 5, 0.98) == pytest.approx([3.0] * 5)  # a constant stays constant (no warm-up bias)


def test_the_rule_is_a_tenth_of_the_lowest_smoothed_loss():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert suggest(lrs, [2.0, 1.5, 0.9, 1.2, 5.0]) == (pytest.approx(1e-3), 1e-2)
    assert suggest(lrs, [2.0, 1.5, 0.9, 1.2, math.nan], divisor=4) == (pytest.approx(0.0025), 1e-2)


def spec(**kw) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "optimizer": {"name": "adam", "learning_rate": 1e-3},
            "batch_size": 16,
            "device": "cpu",
            "compile": False,
        }
        | kw
    )


def test_the_finder_leaves_model_optimizer_and_rng_exactly_as_found():
    data = blobs(n=1000)
    torch.manual_seed(0)
    model = build_model(MODEL, (4, 4, 3))
    optimizer = build_optimizer({"name": "adam", "learning_rate": 1e-3, "clipnorm": 1.0}, model.parameters())
    step = make_step(model, split_output(model)[0], LOSSES["sparse_categorical_crossentropy"], optimizer)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    for i in range(3):  # some optimizer state (moments, step counts) and gradients to preserve
        step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    loss = LOSSES["sparse_categorical_crossentropy"].fn(split_output(model)[0](x[:16]), y[:16])
    loss.backward()  # leave gradients behind
    model.eval()
    before = (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        [p.grad.clone() for p in model.parameters()],
        torch.get_rng_state(),
    )

    result = find_lr(model, data, spec(), optimizer=optimizer)

    assert len(result.lrs) > 10  # it did train, and moved the weights on the way
    after = model.state_dict()
    for k, v in before[0].items():
        assert torch.equal(after[k], v), k
    state = optimizer.state_dict()
    assert state["param_groups"] == before[1]["param_groups"]
    for k, s in before[1]["state"].items():
        for key, v in s.items():
            assert torch.equal(state["state"][k][key], v), (k, key)
    for p, g in zip(model.parameters(), before[2], strict=True):
        assert torch.equal(p.grad, g)
    assert torch.equal(torch.get_rng_state(), before[3])
    assert not model.training


def test_the_sweep_finds_the_turning_point_and_stops_when_the_loss_explodes():
    data = blobs(n=2000, noise=2.0)
    torch.manual_seed(0)
    model = build_model(MODEL, (4, 4, 3))
    result = find_lr(model, data, spec(optimizer={"name": "sgd"}))
    assert result.stopped_early and len(result.lrs) < math.ceil(1200 / 16)  # one epoch is the most
    assert result.losses == pytest.approx(smooth(result.raw_losses, 0.98))
    best = min(range(len(result.losses)), key=result.losses.__getitem__)
    assert result.min_loss_lr == result.lrs[best] and result.suggested_lr == pytest.approx(
        result.lrs[best] / 10
    )
    assert result.losses[best] < 0.6 * result.losses[0]  # it learned before it exploded
    assert 1e-3 < result.suggested_lr < 10


def test_a_suggested_lr_trains():
    data = blobs(n=2000, noise=2.0)
    torch.manual_seed(0)
    model = build_model(MODEL, (4, 4, 3))
    lr = find_lr(model, data, spec(optimizer={"name": "sgd"})).suggested_lr
    from trainwell.train.loop import fit

    state = fit(model, data, spec(optimizer={"name": "sgd"}, epochs=2), learning_rate=lr)
    assert state.history[-1]["val_accuracy"] > 0.85  # chance is 1/3


def test_finder_settings_are_validated():
    with pytest.raises(ValueError, match=r"start_lr \(1.0\) must be below end_lr \(0.1\)"):
        LRFinderSpec(start_lr=1.0, end_lr=0.1)


# --- "auto" in a run, and the command --------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path, blob_npz: Path):
    def make(**train) -> Path:
        data = small_config(
            {"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"}, **train
        )
        path = tmp_path / "c.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    return make


def test_auto_runs_the_finder_and_records_the_lr(tmp_path, config_file, capsys):
    auto = config_file(optimizer={"name": "nadam", "learning_rate": "auto"})
    assert main(["train", str(auto), "--out", str(tmp_path / "auto"), "--quiet"]) == 0
    resolved = tomllib.loads((tmp_path / "auto" / "config.toml").read_text())
    lr = resolved["train"]["optimizer"]["learning_rate"]
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    found = json.loads((tmp_path / "auto" / "lr_finder.json").read_text())
    assert isinstance(lr, float) and lr == metrics["found_learning_rate"] == found["suggested_lr"]
    assert found["suggested_lr"] == pytest.approx(found["min_loss_lr"] / 10)

    # the same run with that number written in is the same run, bit for bit
    explicit = config_file(optimizer={"name": "nadam", "learning_rate": lr})
    assert main(["train", str(explicit), "--out", str(tmp_path / "explicit"), "--quiet"]) == 0

    def history(run: str) -> list[str]:  # every column but the last (seconds)
        return [line.rsplit(",", 1)[0] for line in (tmp_path / run / "history.csv").read_text().splitlines()]

    assert history("auto") == history("explicit")
    weights = [
        torch.load(tmp_path / run / "model.pt")["dense_1.linear.weight"] for run in ("auto", "explicit")
    ]
    assert torch.equal(*weights)


def test_lr_find_command_prints_json_and_plots(tmp_path, config_file, capsys):
    config = config_file()
    plot = tmp_path / "lr.png"
    assert main(["lr-find", str(config), "--json", "--plot", str(plot)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"suggested_lr", "lrs", "losses"} <= set(printed)
    assert len(printed["lrs"]) == len(printed["losses"]) and printed["lrs"][0] == 1e-6
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert main(["lr-find", str(config), "--set", "train.lr_finder.steps=5"]) == 0
    assert "suggested learning rate" in capsys.readouterr().out


def test_lr_find_bad_settings_exit_2(config_file, capsys):
    code = main(["lr-find", str(config_file()), "--set", "train.lr_finder.start_lr=20"])
    assert (
        code == 2
        and "train.lr_finder: start_lr (20.0) must be below end_lr (10.0)" in capsys.readouterr().err
    )


@pytest.mark.integration
def test_lr_find_on_the_cifar10_baseline_and_its_suggestion_trains(tmp_path, capsys):
    data = real_data_dir()
    if data is None or not (data / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real CIFAR-10 not found: set TRAINWELL_DATA to the folder holding cifar10-jpeg.tar.gz")
    baseline = Path(__file__).resolve().parents[2] / "examples" / "cifar10_baseline.toml"
    limits = ["--set", "data.limit_train=4000", "--set", "data.limit_test=2000"]
    assert main(["lr-find", str(baseline), "--json", *limits]) == 0
    lr = json.loads(capsys.readouterr().out)["suggested_lr"]
    assert 1e-6 < lr < 1.0
    assert (
        main(
            [
                "train",
                str(baseline),
                "--out",
                str(tmp_path / "run"),
                "--quiet",
                "--json",
                *limits,
                "--set",
                "train.epochs=2",
                "--set",
                f"train.optimizer.learning_rate={lr}",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["val_accuracy"] > 0.2  # chance is 0.1
