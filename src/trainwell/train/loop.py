"""The training loop: ``fit`` trains a model on in-memory tensors; ``evaluate`` measures it.

The hot path, per step: slice the batch from this epoch's pre-permuted tensors, forward to logits, loss (plus
the kernel penalty when a layer has one), zero the gradients (set to None), backward, optimizer step (clipping
runs inside it), constraints. No per-sample Python work, no host synchronisation: the epoch's loss and
accuracy accumulate in device tensors and are read back by whoever asks (the progress bar every few dozen
steps, the loop once per epoch). Everything optional is a callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainwell import distributed
from trainwell.config import TrainSpec
from trainwell.errors import TrainingError
from trainwell.nn.build import split_output
from trainwell.nn.regularizers import penalty, penalty_terms
from trainwell.train.callbacks import Callback, overrides
from trainwell.train.losses import LOSSES, Loss
from trainwell.train.optimizers import build_optimizer
from trainwell.train.step import StepFn, build_step
from trainwell.train.terminate_on_nan import nonfinite_loss_error

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device = \"cuda\" but torch sees no CUDA device; use \"auto\" or \"cpu\"")
    return torch.device(name)


@dataclass
class TrainState:
    """What a run has done so far; callbacks read it and may set ``stop_training``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    spec: TrainSpec
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)
    stop_training: bool = False
    data_generator: torch.Generator = field(default_factory=torch.Generator)
    steps_per_epoch: int = 0
    # The epoch in progress: its data-order RNG state at the start (so its permutation can be drawn again on
    # resume), the steps done, the running sums (device tensors, read back only on demand) and seconds spent.
    epoch_rng_state: torch.Tensor | None = None
    epoch_step: int = 0
    epoch_loss_sum: torch.Tensor | None = None
    epoch_correct: torch.Tensor | None = None
    epoch_seen: int = 0
    epoch_seconds: float = 0.0
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _as_tensor(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.to(device=device, dtype=dtype)


@torch.inference_mode()
def evaluate(model: nn.Module, x: Any, y: Any, loss: str = "sparse_categorical_crossentropy",
             batch_size: int = 1024, device: torch.device | str | None = None) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``, in inference mode and large batches.

    As in Keras, the loss includes the kernel regularization penalty. Empty inputs give NaN.
    """
    spec: Loss = LOSSES[loss]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = _as_tensor(x, torch.float32, device)
    y = _as_tensor(y, spec.label_dtype, device)
    n = len(x)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    logits_model, _ = split_output(model)
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = logits_model(xb)
            total += spec.sum_fn(logits, yb).double()
            if spec.correct is not None:  # a regression loss (mse) has no accuracy
                correct += spec.correct(logits, yb)
        mean = total.item() / n
        extra = penalty(penalty_terms(model))
        if extra is not None:
            mean += extra.item()
        return {"loss": mean, "accuracy": correct.item() / n if spec.correct is not None else math.nan}
    finally:
        model.train(was_training)


def steps_per_epoch(n: int, batch_size: int, model: nn.Module, world_size: int = 1) -> int:
    """Batches per epoch: ``ceil(n / batch_size)`` as in Keras (the last batch may be partial), except that a
    last batch of a single example is merged into the one before when the model has Batch Normalization,
    whose batch statistics need at least two examples (torch raises; Keras would normalize it to β). On
    ``world_size`` processes each takes a share of every batch (trainwell/distributed.py), so the last batch
    must give each of them one example (two under BN), or it is merged."""
    steps = math.ceil(n / batch_size)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if steps > 1 and 0 < n % batch_size < world_size * (2 if has_bn else 1):
        steps -= 1
    return steps


def _step_key(state: TrainState) -> tuple[int, tuple[bool, ...]]:
    """What a built step depends on besides the model: its optimizer and which parameters train."""
    return id(state.optimizer), tuple(p.requires_grad for p in state.model.parameters())


def fit(
    model: nn.Module,
    dataset: Any,
    spec: TrainSpec | dict,
    *,
    callbacks: Sequence[Callback] = (),
    learning_rate: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    resume: dict[str, Any] | None = None,
    step_fn: StepFn | None = None,
) -> TrainState:
    """Train ``model`` on ``dataset`` (anything with ``x_train, y_train, x_valid, y_valid``) as ``spec`` says.

    Returns the final :class:`TrainState` (its ``history`` has one row per finished epoch). ``learning_rate``
    overrides the optimizer spec's (for ``"auto"``); ``resume`` is a checkpoint dict from
    :func:`trainwell.train.checkpoint.load_checkpoint` to continue from, at an epoch boundary or in the middle
    of an epoch; ``step_fn`` replaces the step ``train.compile`` chooses (see :mod:`trainwell.train.step`).

    ``fit`` runs exactly the ``callbacks`` it is given. The ones a config asks for (early stopping, the LR
    schedule, pruning, diagnostics) are built by :func:`trainwell.runs.config_callbacks`, which is what
    ``trainwell train`` uses.
    """
    if isinstance(spec, dict):
        spec = TrainSpec.model_validate(spec)
    device = resolve_device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    model.to(device)
    loss_spec = LOSSES[spec.loss]
    x_train = _as_tensor(dataset.x_train, torch.float32, device)
    y_train = _as_tensor(dataset.y_train, loss_spec.label_dtype, device)
    has_valid = len(dataset.x_valid) > 0
    if optimizer is None:
        optimizer = build_optimizer(spec.optimizer, model.parameters(), learning_rate)
    state = TrainState(model=model, optimizer=optimizer, spec=spec)
    state.data_generator.manual_seed(spec.seed)
    n, batch_size = len(x_train), spec.batch_size
    dist = distributed.current()  # None unless this process is one rank of a DDP job
    state.steps_per_epoch = steps_per_epoch(n, batch_size, model, dist.world_size if dist else 1)
    if resume is not None:
        from trainwell.train.checkpoint import restore_state

        restore_state(state, resume, callbacks)

    logits_model, _ = split_output(model)

    def build() -> tuple[Callable[..., Any], str]:
        """The step for the state's optimizer and trainable parameters, and a line saying which it is."""
        if dist is not None:  # the eager step over DDP: the compiled one bypasses DDP's gradient hooks
            return dist.make_step(state, logits_model, loss_spec)
        return build_step(  # eager, or compiled when train.compile asks (train/step.py)
            model, logits_model, loss_spec, state.optimizer, compile=spec.compile, precision=spec.precision,
            # the whole run's steps, not those left: a resumed run must choose the step it started with
            batch_size=batch_size, total_steps=spec.epochs * state.steps_per_epoch)

    step, state.extra["step"] = (step_fn, "given (fit's step_fn)") if step_fn is not None else build()
    built_for = _step_key(state)
    step_begin = [cb for cb in callbacks if overrides(cb, "on_step_begin")]
    step_end = [cb for cb in callbacks if overrides(cb, "on_step_end")]

    for cb in callbacks:
        cb.on_train_begin(state)
    for epoch in range(state.epoch, spec.epochs):
        if state.stop_training:  # resumed from a checkpoint written after a callback ended training
            break
        started = time.perf_counter()
        if state.epoch_step == 0:  # a fresh epoch (not one resumed in its middle)
            state.epoch_rng_state = state.data_generator.get_state()
            state.epoch_loss_sum = torch.zeros((), device=device)
            state.epoch_correct = torch.zeros((), dtype=torch.int64, device=device)
            state.epoch_seen, state.epoch_seconds = 0, 0.0
        for cb in callbacks:
            cb.on_epoch_begin(state, epoch)
        if step_fn is None and _step_key(state) != built_for:  # a callback (train.phases) froze layers or
            # rebuilt the optimizer: the step holds both (the compiled one, its list of trainable parameters)
            step, state.extra["step"] = build()
            built_for = _step_key(state)
        model.train()
        # One gather per epoch, then contiguous slices: cheaper than a gather per step. A resumed epoch draws
        # the same permutation from the RNG state saved at its start.
        generator = torch.Generator().set_state(state.epoch_rng_state)
        order = torch.randperm(n, generator=generator).to(device)
        state.data_generator.set_state(generator.get_state())
        xs, ys = x_train[order], y_train[order]
        for i in range(state.epoch_step, state.steps_per_epoch):
            for cb in step_begin:
                cb.on_step_begin(state, state.step)
            start = i * batch_size
            end = n if i == state.steps_per_epoch - 1 else start + batch_size  # the last batch takes the rest
            xb, yb = xs[start:end], ys[start:end]
            if dist is not None:  # this process's share of the global batch
                xb, yb = dist.shard(xb), dist.shard(yb)
            loss, logits = step(xb, yb)
            with torch.no_grad():
                state.epoch_loss_sum += loss * len(yb)
                if loss_spec.correct is not None:
                    state.epoch_correct += loss_spec.correct(logits, yb)
            state.epoch_seen += len(yb)
            state.step += 1
            state.epoch_step = i + 1
            for cb in step_end:
                cb.on_step_end(state, state.step)
            if state.stop_training:
                break
        state.epoch_seconds += time.perf_counter() - started
        if state.epoch_step < state.steps_per_epoch:
            # Stopped in the middle of an epoch (a step callback asked, e.g. on SIGINT): the run is interrupted,
            # not finished, so the end-of-training callbacks (restoring best weights, writing the model) don't run.
            state.interrupted = True
            return state
        validation_started = time.perf_counter()
        if dist is not None:  # every rank then reads the sums over all ranks
            dist.reduce_epoch(state)
        train_loss = state.epoch_loss_sum.item() / max(1, state.epoch_seen)
        if not math.isfinite(train_loss):  # before any epoch-end callback can save the non-finite state
            raise nonfinite_loss_error(train_loss, epoch + 1, 1, state.epoch_step, state.steps_per_epoch)
        logs: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": train_loss,
            "accuracy": state.epoch_correct.item() / max(1, state.epoch_seen)
            if loss_spec.correct is not None else math.nan,
        }
        if has_valid:
            val = (dist.evaluate if dist is not None else evaluate)(  # under DDP: in shards, then reduced
                model, dataset.x_valid, dataset.y_valid, spec.loss, spec.eval_batch_size, device)
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        logs["lr"] = state.learning_rate
        logs["seconds"] = state.epoch_seconds + (time.perf_counter() - validation_started)
        state.history.append(logs)
        state.epoch, state.epoch_step = epoch + 1, 0
        for cb in callbacks:
            cb.on_epoch_end(state, epoch, logs)
        if state.interrupted:  # a callback stopped the run at this epoch's end (a signal): not finished
            return state
        if state.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    return state
