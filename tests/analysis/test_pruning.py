"""Magnitude pruning: masks counted against the requested sparsity, TF-MOT's schedule re-derived, frozen
masks through training, the G25 trap avoided, and the ``prune`` command end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from torch import nn
from torch.nn.utils import prune

from tests.conftest import blobs, small_config
from trainwell.analysis.pruning import (
    MagnitudePruning,
    PruningSpec,
    kernel_sparsity,
    magnitude_masks,
    polynomial_sparsity,
    prune_model,
    should_prune,
    sparse_state_dict,
    spec_schedule,
    storage_bytes,
    threshold_masks,
)
from trainwell.cli import main
from trainwell.config import validate_config
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.runs import config_callbacks, load_run_model, run_training
from trainwell.train.callbacks import Callback
from trainwell.train.checkpoint import checkpoint_dict
from trainwell.train.loop import fit

LAYERS = [
    {"type": "flatten"},
    {"type": "dense", "units": 32, "activation": "elu"},
    {"type": "dense", "units": 16, "activation": "relu"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]
INPUT = (4, 4, 3)


def new_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model({"layers": LAYERS}, INPUT)


def kernels(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("linear.weight")}


# --- the schedule -----------------------------------------------------------------------------------------


def tfmot_polynomial(step, initial, final, begin, end, power=3):
    """TF-MOT's PolynomialDecay, written out: final + (initial - final) * (1 - p)^power, p clipped to [0, 1]."""
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


def test_polynomial_schedule_is_tfmots_cubic():
    # By hand: initial 0.5, final 0.9, over steps 100..300. Halfway, (1 - 0.5)^3 = 1/8 of the gap remains.
    assert polynomial_sparsity(100, 0.5, 0.9, 100, 300) == pytest.approx(0.5)
    assert polynomial_sparsity(200, 0.5, 0.9, 100, 300) == pytest.approx(0.9 - 0.4 / 8)
    assert polynomial_sparsity(300, 0.5, 0.9, 100, 300) == pytest.approx(0.9)
    assert polynomial_sparsity(0, 0.5, 0.9, 100, 300) == pytest.approx(0.5)  # clamped before the start
    assert polynomial_sparsity(10_000, 0.5, 0.9, 100, 300) == pytest.approx(0.9)  # and after the end
    for step in range(0, 400, 7):
        assert polynomial_sparsity(step, 0.1, 0.8, 50, 350) == pytest.approx(
            tfmot_polynomial(step, 0.1, 0.8, 50, 350)
        )
    assert polynomial_sparsity(150, 0.0, 0.8, 100, 200, power=1) == pytest.approx(0.4)  # power 1 is linear


def test_pruning_steps_are_every_frequency_steps_from_begin_to_end_inclusive():
    steps = [s for s in range(0, 100) if should_prune(s, 10, 50, 20)]
    assert steps == [10, 30, 50]
    schedule = spec_schedule(PruningSpec(final_sparsity=0.8, begin_step=10, end_step=50, frequency=20))
    assert [schedule(s) is not None for s in (9, 10, 11, 30, 50, 70)] == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    assert schedule(50) == pytest.approx(0.8)


def test_pruning_spec_errors_name_the_key(tmp_path):
    base = small_config({"dataset": "npz", "path": "x.npz"})
    bad = copy.deepcopy(base)
    bad["train"]["pruning"] = {"final_sparsity": 0.9, "begin_step": 100, "end_step": 50}
    with pytest.raises(
        ConfigError, match=r"train\.pruning: end_step \(50\) must be greater than begin_step \(100\)"
    ):
        validate_config(bad)
    bad["train"]["pruning"] = {"final_sparsity": 1.0, "end_step": 50}
    with pytest.raises(ConfigError, match=r"train\.pruning\.final_sparsity: .*less than 1"):
        validate_config(bad)
    bad["train"]["pruning"] = {"final_sparsity": 0.5, "end_step": 50, "schedule": "constant"}
    with pytest.raises(ConfigError, match=r"train\.pruning\.schedule"):
        validate_config(bad)


# --- masks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_per_layer_masks_prune_the_smallest_weights_of_each_layer(sparsity):
    model = new_model()
    masks = magnitude_masks(model, sparsity, "per_layer")
    for name, w in kernels(model).items():
        mask = masks[name]
        assert int((mask == 0).sum()) == round(sparsity * w.numel())  # counted, as torch rounds
        if sparsity > 0:
            assert w[mask == 0].abs().max() <= w[mask == 1].abs().min()


def test_global_masks_equal_torchs_global_unstructured():
    model = new_model()
    masks = magnitude_masks(model, 0.7, "global")
    reference = copy.deepcopy(model)
    pairs = [(m.linear, "weight") for m in reference.modules() if hasattr(m, "linear")]
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=0.7)
    for (linear, _), name in zip(pairs, masks, strict=True):
        assert torch.equal(masks[name], linear.weight_mask)
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert zeros == round(0.7 * total)
    # global pruning spreads the zeros unevenly: the layers' sparsities differ
    assert len({round(float((m == 0).float().mean()), 3) for m in masks.values()}) > 1


def test_prune_model_returns_a_pruned_copy_with_plain_names():
    model = new_model()
    before = copy.deepcopy(model.state_dict())
    pruned, masks = prune_model(model, 0.75, "per_layer")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    assert set(pruned.state_dict()) == set(before)  # no weight_orig / weight_mask
    for name, w in kernels(pruned).items():
        assert torch.equal(w, before[name] * masks[name])
    counted = kernel_sparsity(pruned)
    assert counted["sparsity"] == pytest.approx(0.75, abs=1 / counted["kernel_weights"])
    assert counted["layers"] == {k: pytest.approx(0.75, abs=0.01) for k in ("dense_1", "dense_2", "dense_3")}


def test_l1_threshold_sparsity_is_counted_on_known_weights():
    model = new_model()
    with torch.no_grad():
        w = model.dense_1.linear.weight
        w.copy_(torch.linspace(-1, 1, w.numel()).view_as(w))  # evenly spaced: a known share lies in [-t, t]
    t = 0.25
    expected = int((torch.linspace(-1, 1, w.numel()).abs() <= t).sum())
    report = kernel_sparsity(model, threshold=t)
    assert report["layers"]["dense_1"] == pytest.approx(expected / w.numel())
    masks = threshold_masks(model, t)
    assert int((masks["dense_1.linear.weight"] == 0).sum()) == expected
    with pytest.raises(ConfigError, match="threshold must be ≥ 0"):
        threshold_masks(model, -1.0)
    with pytest.raises(ConfigError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks(model, 1.5)


def test_sparse_storage_round_trips_and_is_smaller():
    torch.manual_seed(0)
    model = build_model(
        {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": 300, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        (10, 10, 3),
    )
    pruned, masks = prune_model(model, 0.9)
    state = pruned.state_dict()
    sparse = sparse_state_dict(state, list(masks))
    for k, v in state.items():
        restored = sparse[k].to_dense() if sparse[k].layout == torch.sparse_csr else sparse[k]
        assert torch.equal(restored, v)
    kernel = sparse["dense_1.linear.weight"]
    assert kernel.col_indices().dtype == torch.int32
    # CSR: a 4-byte value and a 4-byte column index per kept weight, plus 301 4-byte row pointers. The file
    # adds a container overhead of well under 2 kB per stored array (one dense array; three CSR arrays).
    nnz = round(0.1 * 300 * 300)
    dense_bytes = storage_bytes({"w": state["dense_1.linear.weight"]})
    sparse_bytes = storage_bytes({"w": kernel})
    assert abs(dense_bytes - 300 * 300 * 4) < 2048
    assert abs(sparse_bytes - (nnz * 8 + 301 * 4)) < 3 * 2048


# --- G25: absolute, not relative, amounts ------------------------------------------------------------------


def test_torchs_repeated_amounts_compound_but_ours_are_absolute():
    model = new_model()
    linear = copy.deepcopy(model.dense_1.linear)
    prune.l1_unstructured(linear, "weight", amount=0.5)
    prune.l1_unstructured(linear, "weight", amount=0.5)
    assert float((linear.weight == 0).float().mean()) == pytest.approx(0.75)  # the trap: 50 % of 50 % more

    masks = magnitude_masks(model, 0.5)
    from trainwell.analysis.pruning import apply_masks_

    apply_masks_(model, masks)
    masks = magnitude_masks(model, 0.5)  # the same absolute target again: nothing more is pruned
    assert float((masks["dense_1.linear.weight"] == 0).float().mean()) == pytest.approx(0.5)


class FakeTrainer:
    def __init__(self, epochs: int, steps_per_epoch: int):
        self.spec = type("Spec", (), {"epochs": epochs})()
        self.steps_per_epoch = steps_per_epoch


def test_callback_follows_the_schedule_in_absolute_terms_and_keeps_pruned_weights_at_zero():
    model = new_model()
    spec = PruningSpec(final_sparsity=0.9, initial_sparsity=0.2, begin_step=5, end_step=45, frequency=10)
    callback = MagnitudePruning.from_spec(model, spec)
    trainer = FakeTrainer(epochs=1, steps_per_epoch=60)
    callback.on_train_begin(trainer)
    generator = torch.Generator().manual_seed(1)
    pruned_before: dict[str, torch.Tensor] = {}
    for step in range(60):
        callback.on_step_begin(trainer, step)
        if should_prune(step, 5, 45, 10):
            target = tfmot_polynomial(step, 0.2, 0.9, 5, 45)
            for name, w in kernels(model).items():
                zero = w == 0
                assert int(zero.sum()) == round(target * w.numel()), (step, name)
                if name in pruned_before:  # the pruned set only grows
                    assert bool(zero[pruned_before[name]].all())
                pruned_before[name] = zero.clone()
        with torch.no_grad():  # an "optimizer step" that moves every weight, pruned or not
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=generator))
        callback.on_step_end(trainer, step)
        if step >= 5:
            for name, w in kernels(model).items():
                assert bool((w[pruned_before[name]] == 0).all())
    assert kernel_sparsity(model)["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_callback_state_round_trips_and_end_step_past_the_run_is_an_error():
    model = new_model()
    callback = MagnitudePruning(model, masks=magnitude_masks(model, 0.6))
    other = MagnitudePruning(new_model(1), masks={})
    other.load_state_dict(callback.state_dict())
    assert all(torch.equal(other.masks[k], callback.masks[k]) for k in callback.masks)
    late = MagnitudePruning.from_spec(model, PruningSpec(final_sparsity=0.5, end_step=100))
    with pytest.raises(
        ConfigError, match=r"end_step = 100, but training takes only 60 steps .* end_step ≤ 59"
    ):
        late.on_train_begin(FakeTrainer(epochs=2, steps_per_epoch=30))


def test_finetuning_keeps_the_masks_frozen_and_trains_the_rest():
    data = blobs()
    model = new_model()
    pruned, masks = prune_model(model, 0.8)
    start = copy.deepcopy(pruned.state_dict())
    fit(
        pruned,
        data,
        {
            "epochs": 2,
            "batch_size": 32,
            "device": "cpu",
            "optimizer": {"name": "nadam", "learning_rate": 1e-2},
        },
        callbacks=[MagnitudePruning(pruned, masks=masks)],
    )
    for name, w in kernels(pruned).items():
        assert bool((w[masks[name] == 0] == 0).all()), name  # frozen: every pruned weight is still exactly 0
        assert not torch.equal(w[masks[name] == 1], start[name][masks[name] == 1])  # the rest trained
    assert kernel_sparsity(pruned)["sparsity"] == pytest.approx(0.8, abs=0.005)


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            trainer.stop_training = True


def test_a_resumed_pruning_run_gives_the_uninterrupted_result():
    data = blobs()  # 360 training samples: 12 steps an epoch, 48 in 4 epochs
    spec = {
        "epochs": 4,
        "batch_size": 32,
        "device": "cpu",
        "optimizer": {"name": "nadam", "learning_rate": 1e-2},
    }
    pruning = PruningSpec(final_sparsity=0.8, begin_step=3, end_step=40, frequency=4)
    full_model = new_model()
    full = fit(full_model, data, spec, callbacks=[MagnitudePruning.from_spec(full_model, pruning)])
    first_model = new_model()
    first_cb = MagnitudePruning.from_spec(first_model, pruning)
    first = fit(first_model, data, spec, callbacks=[first_cb, StopAfterEpoch(1)])
    first.stop_training = False  # as if the process had died after epoch 2's checkpoint
    ckpt = checkpoint_dict(first, [first_cb])
    torch.manual_seed(123)
    resumed_model = new_model(seed=7)  # everything must come from the checkpoint, the masks included
    resumed = fit(
        resumed_model, data, spec, callbacks=[MagnitudePruning.from_spec(resumed_model, pruning)], resume=ckpt
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for (name, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert kernel_sparsity(resumed_model)["sparsity"] == pytest.approx(0.8, abs=1e-3)


# --- training with train.pruning, and the prune command -----------------------------------------------------


def write_blobs_npz(path: Path) -> Path:
    """The blobs as an ``.npz`` file in the layout ``dataset = "npz"`` reads (as conftest's ``blob_npz``)."""
    d = blobs(n=500, classes=3)
    np.savez(
        path,
        x_train=np.concatenate([d.x_train, d.x_valid]),
        y_train=np.concatenate([d.y_train, d.y_valid]),
        x_test=d.x_test,
        y_test=d.y_test,
    )
    return path


@pytest.fixture
def npz_config(blob_npz: Path) -> dict:
    return small_config(
        {"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"}, epochs=3
    )


def test_training_with_a_pruning_schedule_reaches_the_final_sparsity(tmp_path, npz_config):
    npz_config["train"]["pruning"] = {"final_sparsity": 0.75, "begin_step": 0, "end_step": 20, "frequency": 5}
    config = validate_config(npz_config)
    assert any(isinstance(cb, MagnitudePruning) for cb in config_callbacks(config, new_model(), None))
    result = run_training(config, out=tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    for name in ("dense_1.linear.weight", "dense_2.linear.weight"):
        assert int((state[name] == 0).sum()) == round(0.75 * state[name].numel())
    assert result.history[-1]["sparsity"] == pytest.approx(0.75, abs=0.01)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on blobs, trained once for this module's tests (which only read it)."""
    folder = tmp_path_factory.mktemp("trained_run")
    config = small_config(
        {
            "dataset": "npz",
            "path": str(write_blobs_npz(folder / "blobs.npz")),
            "validation_size": 100,
            "scaling": "none",
        },
        epochs=3,
    )
    run_training(validate_config(config), out=folder / "run", progress=False)
    return folder / "run"


def test_prune_command_writes_a_run_folder_that_loads_and_evaluates(tmp_path, trained_run, capsys):
    out = tmp_path / "pruned"
    assert (
        main(["prune", str(trained_run), "--sparsity", "0.75", "--global", "--out", str(out), "--json"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["test_accuracy"] == metrics["test_accuracy"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(torch.load(trained_run / "model.pt", weights_only=True))
    zeros = sum(int((v == 0).sum()) for k, v in state.items() if k.endswith("linear.weight"))
    total = sum(v.numel() for k, v in state.items() if k.endswith("linear.weight"))
    assert metrics["sparsity"] == zeros / total == pytest.approx(0.75, abs=1 / total)
    assert metrics["sparse_bytes"] < metrics["dense_bytes"] == (out / "model.pt").stat().st_size
    assert json.loads((out / "run.json").read_text())["transform"] == {
        "name": "prune",
        "sparsity": 0.75,
        "scope": "global",
        "finetune_epochs": 0,
    }
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    load_run_model(out)  # the pruned run loads like any run


def test_prune_with_finetune_and_threshold(tmp_path, trained_run, capsys):
    out = tmp_path / "ft"
    assert (
        main(
            [
                "prune",
                str(trained_run),
                "--sparsity",
                "0.5",
                "--finetune",
                "1",
                "--out",
                str(out),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert "test_accuracy_before_finetune" in metrics and (out / "history.csv").is_file()
    assert metrics["layer_sparsity"] == {k: pytest.approx(0.5, abs=0.01) for k in ("dense_1", "dense_2")}

    state = torch.load(trained_run / "model.pt", weights_only=True)
    t = float(np.quantile(state["dense_1.linear.weight"].abs().numpy(), 0.3))
    expected = sum(int((v.abs() <= t).sum()) for k, v in state.items() if k.endswith("linear.weight"))
    total = sum(v.numel() for k, v in state.items() if k.endswith("linear.weight"))
    assert (
        main(["prune", str(trained_run), "--threshold", str(t), "--out", str(tmp_path / "th"), "--json"]) == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["achieved_sparsity"] == pytest.approx(expected / total)
    assert metrics["sparsity"] == pytest.approx(expected / total)


def test_prune_errors_are_for_people(tmp_path, trained_run, capsys):
    assert main(["prune", str(trained_run), "--sparsity", "1.5"]) == 2
    assert "sparsity must be in [0, 1)" in capsys.readouterr().err
    assert main(["prune", str(tmp_path), "--sparsity", "0.5"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["prune", str(trained_run), "--sparsity", "0.5", "--out", str(busy)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.toml").write_text(
        tomli_w.dumps(
            json.loads(
                json.dumps(
                    validate_config(small_config({"dataset": "npz", "path": "x.npz"})).model_dump(
                        mode="json", exclude_none=True
                    )
                )
            )
        )
    )
    assert main(["prune", str(unfinished), "--sparsity", "0.5"]) == 2
    assert "has not finished" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", str(trained_run), "--sparsity", "0.5", "--threshold", "0.1"])
