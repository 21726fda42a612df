"""Run folders, the unit of record: everything a training run produced, written atomically.

``runs/<name>-<YYYYmmdd-HHMMSS>/`` (or the folder given with ``--out``) holds

- ``config.toml``: the resolved config (every default filled in) — the run can be rebuilt from it;
- ``run.json``: status (``running``, ``finished``, ``failed``), versions, device, start and end times;
- ``history.csv``: one row per epoch (``epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds``);
- ``checkpoint.pt``: the full training state after the last finished epoch, for ``--resume``;
- ``model.pt``: the final weights (a state dict, ``torch.load(weights_only=True)``);
- ``steps.csv``: with a step-wise LR schedule (or Keras's ``decay``), every step's ``step, lr, momentum``;
- ``lr_finder.json``: with ``learning_rate = "auto"``, the LR finder's sweep and suggestion;
- ``tb/``: TensorBoard event files (``train/``, ``validation/``), when the ``tensorboard`` package is installed;
- ``metrics.json``: the final numbers, written last: its presence means the run finished.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell import distributed
from trainwell.config import Config, config_to_toml, load_config
from trainwell.errors import ConfigError, RunError
from trainwell.io import (
    WriteError,
    exclusive_lock,
    lock_holder,
    remove_temporaries,
    write_json,
    write_text,
    write_with,
)
from trainwell.nn.build import build_model, output_units
from trainwell.nn.selfnorm import warn_if_not_self_normalizing
from trainwell.train.callbacks import Callback, EarlyStopping
from trainwell.train.checkpoint import load_checkpoint, load_weights, save_checkpoint
from trainwell.train.loop import HISTORY_COLUMNS, TrainState, evaluate, fit, resolve_device
from trainwell.train.lr_finder import LR_FINDER_JSON, found_lr_metrics, resolve_learning_rate
from trainwell.train.progress import ProgressBar
from trainwell.train.schedules import schedule_callbacks
from trainwell.train.signals import GracefulStop, resume_message
from trainwell.train.tensorboard import TB_DIR, TensorBoard, tensorboard_available
from trainwell.train.terminate_on_nan import NonFiniteLossError, TerminateOnNaN

CONFIG, RUN, HISTORY, CHECKPOINT, MODEL, METRICS = (
    "config.toml", "run.json", "history.csv", "checkpoint.pt", "model.pt", "metrics.json")
LOCK = ".lock"  # flock-ed by the process training into the folder; the kernel drops it when that process dies


def history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / HISTORY, newline="") as f:
        return [{k: (float(v) if v != "" else float("nan")) for k, v in row.items()} for row in csv.DictReader(f)]


class RunRecorder(Callback):
    """Writes the history and the checkpoint after every epoch and the model at the end. Put it last, after
    every callback whose state it must save and after early stopping's weight restore."""

    def __init__(self, run_dir: Path, callbacks: list[Callback]):
        self.run_dir = run_dir
        self.callbacks = callbacks  # whose states go into the checkpoint

    def on_epoch_end(self, trainer: TrainState, epoch: int, logs: dict[str, float]) -> None:
        self.save(trainer)

    def save(self, trainer: TrainState) -> None:
        """Write the history and the checkpoint of ``trainer`` (at an epoch's end, or where it stopped)."""
        write_text(self.run_dir / HISTORY, history_csv(trainer.history))
        save_checkpoint(self.run_dir / CHECKPOINT, trainer, self.callbacks)

    def on_train_end(self, trainer: TrainState) -> None:
        state = trainer.model.state_dict()
        write_with(self.run_dir / MODEL, lambda f: torch.save(state, f))


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped an interrupted run
    message: str = ""  # for an interrupted run: where it stopped and how to continue


def config_callbacks(config: Config, model: nn.Module, run_dir: Path | None,
                     dataset: Any = None) -> list[Callback]:
    """The callbacks a config asks for, in the order they must run at each epoch's end.

    Every optional training feature that a config switches on (early stopping, LR schedules, diagnostics,
    pruning, ...) adds its callback here; the progress bar and the run recorder come after these.
    """
    callbacks: list[Callback] = schedule_callbacks(config.train.schedule, run_dir,
                                                   record_steps=config.train.optimizer.decay > 0)
    if config.train.phases:  # freezing and an optimizer per phase (trainwell.transfer.phases)
        from trainwell.transfer import phases_callback

        callbacks.append(phases_callback(config, model))
    if config.train.early_stopping is not None:
        callbacks.append(EarlyStopping(model, config.train.early_stopping))
    if config.train.pruning is not None:
        from trainwell.analysis.pruning import MagnitudePruning

        callbacks.append(MagnitudePruning.from_spec(model, config.train.pruning))
    if run_dir is not None and tensorboard_available():  # RUN/tb/ for TensorBoard, when it is installed
        callbacks.append(TensorBoard(run_dir / TB_DIR))
    if config.train.diagnostics is not None:  # last: its final probe sees restored and pruned weights
        if dataset is None:
            raise ValueError("train.diagnostics needs the dataset, for its probe batch: pass dataset=")
        from trainwell.analysis.diagnostics.recorder import recorder_from_spec

        callbacks.append(recorder_from_spec(config.train.diagnostics, dataset, config.train.loss, run_dir))
    return callbacks


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_dir(config: Config, name: str, runs_root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{config.name or name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_model_fits_data(config: Config, num_classes: int) -> None:
    units = output_units(config.model)
    if config.train.loss == "mse":
        raise ConfigError("train.loss: mse is the reconstruction loss of autoencoder pretraining (pretrain = "
                          "{ method = \"autoencoder\", ... }); a classifier needs sparse_categorical_crossentropy "
                          "or binary_crossentropy")
    if config.train.loss == "sparse_categorical_crossentropy" and units != num_classes:
        raise ConfigError(
            f"model.layers: the last dense layer has {units} units but {config.data.dataset} has "
            f"{num_classes} classes; set units = {num_classes} on the output layer"
        )
    if config.train.loss == "binary_crossentropy" and (units != 1 or num_classes != 2):
        raise ConfigError(
            f"binary_crossentropy needs 2 classes and a last dense layer of 1 unit; got {num_classes} classes "
            f"and {units} units"
        )


def check_config_fits_data(config: Config, dataset: Any) -> None:
    """The checks that need the data as well as the config, made before any folder is created: the output
    layer against the classes, the model's output shape for one example, the validation set that early
    stopping monitors (a fractional ``validation_size`` can round to no examples)."""
    check_model_fits_data(config, dataset.num_classes)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # a throwaway build must not move the seeded RNG
        model = build_model(config.model, dataset.input_shape)
        shape = tuple(model.eval()(torch.zeros((1, *dataset.input_shape))).shape[1:])
    wanted = (output_units(config.model),)
    if shape != wanted:
        raise ConfigError(
            f"model.layers: the model's output for one example has shape {shape}, not {wanted}; dense layers "
            "act on the last axis, so put { type = \"flatten\" } before the first dense layer"
        )
    es = config.train.early_stopping
    if es is not None and es.monitor.startswith("val_") and len(dataset.x_valid) == 0:
        raise ConfigError(
            f"train.early_stopping.monitor: \"{es.monitor}\" needs a validation set, but "
            f"data.validation_size = {config.data.validation_size} gives no validation examples; set a "
            "larger data.validation_size"
        )


def load_run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir}: not a run folder (no {CONFIG}); give a folder made by `trainwell train`")
    return load_config(run_dir / CONFIG)


def load_run_model(run_dir: str | Path, config: Config | None = None, input_shape: tuple[int, ...] | None = None
                   ) -> nn.Module:
    """The trained model of a finished run (its ``model.pt``), on the CPU, in inference mode."""
    run_dir = Path(run_dir)
    config = config or load_run_config(run_dir)
    if not (run_dir / MODEL).is_file():
        raise RunError(f"{run_dir}: the run has no {MODEL} (it has not finished); resume it with "
                       f"`trainwell train --resume {run_dir}`")
    if input_shape is None:
        input_shape = tuple(json.loads((run_dir / RUN).read_text())["input_shape"])
    model = build_model(config.model, input_shape)
    model.load_state_dict(load_weights(run_dir / MODEL))
    return model.eval()


def run_training(config: Config, *, name: str = "run", out: str | Path | None = None,
                 runs_root: str | Path = "runs", progress: bool = True,
                 extra_callbacks: list[Callback] | None = None) -> RunResult:
    """Train ``config`` into a new run folder and return its metrics: what ``trainwell train`` does.

    Nothing is created until the config and the data have been checked.
    """
    from trainwell.data import load_dataset

    dataset = load_dataset(config.data)
    check_config_fits_data(config, dataset)
    if config.model.from_ is not None or config.pretrain is not None or config.train.phases:
        from trainwell.transfer import check_transfer

        check_transfer(config, dataset.input_shape)  # model.from, pretrain, train.phases
    distributed.check_config(config, distributed.world_size(), dataset.input_shape)
    if not distributed.is_rank_zero():  # rank 0 writes the run folder (and warns); this rank trains in step
        config, _ = resolve_learning_rate(config, dataset)
        return distributed.train_worker(distributed.share_learning_rate(config), dataset, None, extra_callbacks)
    warn_if_not_self_normalizing(config)
    run_dir = Path(out) if out is not None else new_run_dir(config, name, runs_root)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir}: the folder exists and is not empty; choose another --out, or continue "
                       f"that run with `trainwell train --resume {run_dir}`")
    config, found = resolve_learning_rate(config, dataset)  # learning_rate = "auto": run the LR finder
    config = distributed.share_learning_rate(config)  # under DDP: rank 0's, on every rank
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run folder {run_dir}: {e.strerror or e}; choose a writable --out "
                       "or --runs folder") from None
    write_text(run_dir / CONFIG, config_to_toml(config))
    if found is not None:
        write_json(run_dir / LR_FINDER_JSON, found.to_json())
    with exclusive_lock(run_dir / LOCK, f"the run folder {run_dir}"):
        return _train_into(run_dir, config, dataset, None, progress, extra_callbacks)


def resume_training(run_dir: str | Path, *, progress: bool = True,
                    extra_callbacks: list[Callback] | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with its own config: ``train --resume``.

    Any run that has not finished can be resumed: interrupted (a signal), crashed (killed, power cut: its
    ``run.json`` still says running but no process holds its lock) or failed (e.g. a full disk). A run that
    died before its first checkpoint starts again from the beginning, in the same folder. A finished run, or
    one that another process is training, is refused.
    """
    from trainwell.data import load_dataset

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not distributed.is_rank_zero():  # rank 0 checks the folder's status and holds its lock
        ckpt = load_checkpoint(run_dir / CHECKPOINT) if (run_dir / CHECKPOINT).is_file() else None
        return distributed.train_worker(config, load_dataset(config.data), ckpt, extra_callbacks)
    status = run_status(run_dir)
    if status == "finished":
        raise RunError(f"{run_dir}: this run has already finished ({METRICS} exists); nothing to resume. "
                       f"To train longer, start a new run: trainwell train {run_dir / CONFIG} "
                       "--set train.epochs=N")
    if status == "running":
        raise RunError(f"{run_dir}: the run is being trained by another process "
                       f"(pid {lock_holder(run_dir / LOCK)}); wait for it to end or stop it first")
    ckpt = load_checkpoint(run_dir / CHECKPOINT) if (run_dir / CHECKPOINT).is_file() else None
    dataset = load_dataset(config.data)
    distributed.check_config(config, distributed.world_size(), dataset.input_shape)
    with exclusive_lock(run_dir / LOCK, f"the run folder {run_dir}"):
        remove_temporaries(run_dir)  # left by a process killed in the middle of a write
        return _train_into(run_dir, config, dataset, ckpt, progress, extra_callbacks)


def run_status(run_dir: str | Path) -> str:
    """Where the run in ``run_dir`` stands, for ``--resume`` and for re-running experiments.

    ``"finished"`` (``metrics.json`` exists), ``"running"`` (a live process holds the folder's lock),
    ``"crashed"`` (``run.json`` says running but no process holds the lock: killed, or the machine went down),
    ``"interrupted"`` (stopped by a signal), ``"failed"`` (stopped by an error), or ``"new"`` (training never
    began). Every status but finished and running can be resumed.
    """
    run_dir = Path(run_dir)
    if (run_dir / METRICS).is_file():
        return "finished"
    if lock_holder(run_dir / LOCK) is not None:
        return "running"
    try:
        status = json.loads((run_dir / RUN).read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return "new"  # run.json is written atomically, so it is missing rather than half-written
    # "finished" without metrics.json (which is written first) means the metrics were lost: finish again.
    return "crashed" if status in ("running", "finished") else str(status)


def _train_into(run_dir: Path, config: Config, dataset: Any, ckpt: dict[str, Any] | None, progress: bool,
                extra_callbacks: list[Callback] | None) -> RunResult:
    device = resolve_device(config.train.device)
    info = {
        "status": "running",
        "started": _now(),
        "input_shape": list(dataset.input_shape),
        "classes": list(dataset.classes),
        "data_source": dataset.source,
        "device": str(device),
        "processes": distributed.world_size(),  # > 1: data-parallel over DDP (trainwell/distributed.py)
        "trainwell": _version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_json(run_dir / RUN, info)

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dataset.input_shape)
    if ckpt is None and (config.model.from_ is not None or config.pretrain is not None):
        from trainwell.transfer import prepare_model  # a resumed run's weights come from its checkpoint

        prepare_model(config, model, dataset, run_dir, progress=progress)  # writes transfer.json
    callbacks = config_callbacks(config, model, run_dir, dataset)
    early = next((cb for cb in callbacks if isinstance(cb, EarlyStopping)), None)
    callbacks.extend(extra_callbacks or [])
    nan_check = TerminateOnNaN(config=str(run_dir / CONFIG))
    callbacks.append(nan_check)
    bar = ProgressBar() if progress else None
    if bar is not None:
        callbacks.append(bar)
    recorder = RunRecorder(run_dir, list(callbacks))
    stopper = GracefulStop()  # after the recorder: a signal at an epoch's end lets its checkpoint be written
    callbacks += [recorder, stopper]

    started = time.perf_counter()
    try:
        with stopper:
            state = fit(model, dataset, config.train, callbacks=callbacks, resume=ckpt)
            if state.interrupted and state.epoch_step:  # stopped in an epoch's middle: save exactly there
                nan_check.check(state)  # never overwrite the last good checkpoint with a non-finite state
                recorder.save(state)
    except BaseException as e:
        if bar is not None:
            bar.on_train_end(None)  # end the live display before the error is printed
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        with contextlib.suppress(WriteError):  # a full or read-only disk must not hide the error that matters
            write_json(run_dir / RUN, info | {"status": status, "ended": _now(),
                                              "error": str(e) or type(e).__name__})
        if isinstance(e, NonFiniteLossError):
            kept = (f"{run_dir} keeps the history and the checkpoint of the last good epoch"
                    if (run_dir / CHECKPOINT).is_file() else "no epoch finished, so there is no checkpoint")
            raise NonFiniteLossError(f"{e}\n{kept}; nothing non-finite was saved.") from None
        raise
    elapsed = time.perf_counter() - started
    if state.interrupted:
        if bar is not None:
            bar.on_train_end(state)
        write_json(run_dir / RUN, info | {"status": "interrupted", "ended": _now(), "epoch": state.epoch,
                                          "epoch_step": state.epoch_step})
        message = "" if stopper.received is None else resume_message(
            stopper.received, run_dir, state.epoch, state.epoch_step, state.steps_per_epoch)
        return RunResult(run_dir=run_dir, metrics={}, history=state.history, interrupted=True,
                         signal=stopper.received, message=message)

    metrics = summarize(state, model, dataset, config, early)
    metrics.update(found_lr_metrics(run_dir))
    if ckpt is not None:
        metrics["resumed_from_epoch"] = ckpt["epoch"]
    write_json(run_dir / METRICS, metrics)
    write_json(run_dir / RUN, info | {"status": "finished", "ended": _now(), "wall_seconds": elapsed,
                                      "step": state.extra.get("step")})
    return RunResult(run_dir=run_dir, metrics=metrics, history=state.history)


def summarize(state: TrainState, model: nn.Module, dataset: Any, config: Config,
              early: EarlyStopping | None) -> dict[str, Any]:
    """metrics.json: the final model's validation and test numbers, and the run's timing."""
    history = state.history
    train_seconds = sum(row["seconds"] for row in history)
    if early is not None and early.best_weights is not None:
        best_epoch = early.best_epoch + 1
    elif history and "val_loss" in history[0]:
        best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    else:
        best_epoch = history[-1]["epoch"] if history else 0
    kw = {"loss": config.train.loss, "batch_size": config.train.eval_batch_size}
    val = evaluate(model, dataset.x_valid, dataset.y_valid, **kw)
    test = evaluate(model, dataset.x_test, dataset.y_test, **kw)
    samples = len(dataset.x_train) * len(history)
    sparse = {}
    if config.train.pruning is not None or any(
            getattr(m, "regularizer", None) is not None and m.regularizer.l1 for m in model.modules()):
        from trainwell.analysis.pruning import L1_ZERO_THRESHOLD, kernel_sparsity

        threshold = 0.0 if config.train.pruning is not None else L1_ZERO_THRESHOLD
        sparse = {"sparsity": kernel_sparsity(model, threshold)["sparsity"], "sparsity_threshold": threshold}
    return {
        "best_epoch": int(best_epoch),
        "epochs_run": len(history),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(history)),
        "samples_per_second": samples / train_seconds if train_seconds else 0.0,
        "learning_rate": history[0]["lr"] if history else None,
        **sparse,
    }


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Test-set loss and accuracy of a finished run: what ``trainwell evaluate`` does."""
    from trainwell.data import load_dataset

    config = load_run_config(run_dir)
    dataset = load_dataset(config.data)
    model = load_run_model(run_dir, config, dataset.input_shape)
    test = evaluate(model, dataset.x_test, dataset.y_test, config.train.loss, config.train.eval_batch_size)
    return {"run": str(run_dir), "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "test_samples": len(dataset.x_test)}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trainwell")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"
