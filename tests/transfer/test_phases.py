"""train.phases: freezing (no updates, BN in inference mode), an optimizer per phase, LRs, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import blobs
from tests.transfer.conftest import BINARY, HIDDEN, SIGMOID, SOFTMAX3, config_dict
from trainwell.config import TrainSpec, validate_config
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.runs import read_history, resume_training, run_training
from trainwell.train.callbacks import Callback
from trainwell.train.checkpoint import load_checkpoint, load_weights
from trainwell.train.loop import fit
from trainwell.transfer import Phases, PhaseSpec, freeze_


class Spy(Callback):
    """Records, at each epoch's start (after the phase is set up), the optimizer and the weights."""

    def __init__(self):
        self.seen: list[dict] = []

    def on_epoch_begin(self, trainer, epoch):
        opt = trainer.optimizer
        self.seen.append(
            {
                "optimizer": opt,
                "lr": opt.param_groups[0]["lr"],
                "fresh": len(opt.state) == 0,
                "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()},
                "trainable": [p.requires_grad for p in trainer.model.parameters()],
            }
        )


def net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return build_model({"layers": [*HIDDEN, SOFTMAX3]}, (4, 4, 3))


def train_spec(epochs: int) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
            "epochs": epochs,
            "device": "cpu",
            "compile": False,
        }
    )


def test_each_phase_gets_a_fresh_optimizer_with_its_learning_rate_and_frozen_layers_stay_put():
    model, spy = net(), Spy()
    # unfrozen first (momentum builds up), then the first 4 layers frozen: a stale optimizer would move them
    phases = [PhaseSpec(epochs=2), PhaseSpec(epochs=2, freeze=4, learning_rate=0.01)]
    cb = Phases(model, phases, [0, 4], train_spec(4).optimizer, 0.05)
    state = fit(model, blobs(), train_spec(4), callbacks=[cb, spy])
    opts = [s["optimizer"] for s in spy.seen]
    assert opts[0] is opts[1] and opts[2] is opts[3] and opts[1] is not opts[2]  # rebuilt at the phase change
    assert [s["fresh"] for s in spy.seen] == [True, False, True, False]  # no momentum carried over
    assert [s["lr"] for s in spy.seen] == [0.05, 0.05, 0.01, 0.01]
    assert [row["lr"] for row in state.history] == [0.05, 0.05, 0.01, 0.01]
    n_frozen = sum(1 for layer in list(model.children())[:4] for _ in layer.parameters())
    assert spy.seen[2]["trainable"] == [False] * n_frozen + [True] * 2  # dense_3's weight and bias train
    start, end = spy.seen[2]["weights"], model.state_dict()
    for k in start:  # frozen: bit-identical, BN moving statistics included; the output layer trained
        same = torch.equal(start[k], end[k])
        assert same == (not k.startswith("dense_3.")), k


def test_frozen_batch_norm_runs_in_inference_mode():
    model = net()
    handles = freeze_(model, 3)
    bn = model.batch_normalization_1
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(8, 4, 4, 3)
    model.train()  # what fit does at every epoch
    out = model(x)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    model.eval()
    assert torch.equal(out, model(x))  # the same normalization as inference: the moving statistics
    for h in handles:
        h.remove()
    model.train()
    model(x)
    assert not torch.equal(bn.running_mean, mean)  # released: training mode again


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_across_phases_gives_the_uninterrupted_result(
    tmp_path: Path, blob_npz, source_run, stop_after
):
    phases = [{"epochs": 1, "freeze": "reused"}, {"epochs": 2, "freeze": "none", "learning_rate": 0.01}]
    config = validate_config(
        config_dict(
            blob_npz,
            SIGMOID,
            data=BINARY,
            model={"from": str(source_run)},
            loss="binary_crossentropy",
            phases=phases,
        )
    )
    whole = run_training(config, out=tmp_path / "whole", progress=False)

    class StopAt(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch + 1 == stop_after:
                trainer.interrupted = True

    part = run_training(config, out=tmp_path / "part", progress=False, extra_callbacks=[StopAt()])
    assert part.interrupted
    saved = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert {"class": "Phases", "state": {"phase": stop_after - 1}} in saved["callbacks"]  # the phase recorded
    resumed = resume_training(tmp_path / "part", progress=False)
    a, b = load_weights(whole.run_dir / "model.pt"), load_weights(resumed.run_dir / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in read_history(resumed.run_dir)] == [0.05, 0.01, 0.01]


def test_epochs_are_the_sum_of_the_phases_and_errors_name_the_key(blob_npz):
    config = validate_config(
        config_dict(blob_npz, SOFTMAX3, phases=[{"epochs": 2}, {"epochs": 3, "freeze": 2}])
    )
    assert config.train.epochs == 5
    with pytest.raises(
        ConfigError,
        match=r"train\.epochs: 4 differs from the sum of train\.phases' epochs "
        r"\(2 \+ 3 = 5\)",
    ):
        validate_config(config_dict(blob_npz, SOFTMAX3, phases=[{"epochs": 2}, {"epochs": 3}], epochs=4))
    with pytest.raises(
        ConfigError,
        match=r'train\.phases\[0\]\.freeze: "reused" needs layers from model\.from '
        r"or pretrain",
    ):
        validate_config(config_dict(blob_npz, SOFTMAX3, phases=[{"epochs": 2, "freeze": "reused"}]))
    with pytest.raises(ConfigError, match=r"train\.phases\[1\]\.freeze: 9 layers, but the model has 5"):
        validate_config(config_dict(blob_npz, SOFTMAX3, phases=[{"epochs": 2}, {"epochs": 1, "freeze": 9}]))
    with pytest.raises(ConfigError, match=r"train\.schedule: a learning-rate schedule cannot be combined"):
        validate_config(
            config_dict(blob_npz, SOFTMAX3, phases=[{"epochs": 2}], schedule={"name": "exponential", "s": 10})
        )


def test_frozen_batch_norm_keeps_the_eager_step(blob_npz):
    # The compiled step computes BN in training mode, so it must not run a frozen BN layer: "auto" falls back
    # to the eager step, and compile = true is refused up front.
    from trainwell.train.losses import LOSSES
    from trainwell.train.optimizers import build_optimizer
    from trainwell.train.step import build_step, compiled_step_problem

    model = net()
    optimizer = build_optimizer({"name": "sgd"}, model.parameters())
    assert compiled_step_problem(model, optimizer) is None
    freeze_(model, 3)
    assert "frozen batch normalization layers" in compiled_step_problem(model, optimizer)
    _, label = build_step(
        model,
        model[:-1],
        LOSSES["sparse_categorical_crossentropy"],
        optimizer,
        compile="auto",
        batch_size=32,
        total_steps=10**6,
    )
    assert label.startswith("eager (auto: frozen batch normalization layers")
    with pytest.raises(
        ConfigError,
        match=r"train\.compile: the compiled step runs Batch Normalization in training "
        r"mode, but train\.phases\[0\] freezes a batch_norm layer",
    ):
        validate_config(config_dict(blob_npz, SOFTMAX3, compile=True, phases=[{"epochs": 1, "freeze": 3}]))
    validate_config(
        config_dict(blob_npz, SOFTMAX3, compile=True, phases=[{"epochs": 1, "freeze": 2}])
    )  # no BN
