"""Checkpoints: the full training state, written atomically, loadable without executing code.

A checkpoint holds the model, the optimizer, every callback's state (early stopping, schedules, ...), the
epoch and step, every RNG state (torch's global RNG, which drives dropout, and the data-order generator),
whether a callback had ended training, and the history so far: enough to continue a run exactly where it
stopped. Only tensors, numbers, strings, lists and dicts go in, so it loads with
``torch.load(weights_only=True)``, which refuses pickled code: a file that holds any other object is refused
before anything in it runs (torch honours an explicit ``weights_only=True`` even when the environment sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trainwell.errors import CheckpointError
from trainwell.io import write_with

FORMAT = "trainwell-checkpoint"
VERSION = 1
# What restore_state reads; a file without one of these is not a checkpoint it can resume from.
REQUIRED_KEYS = ("epoch", "step", "model", "optimizer", "callbacks", "rng", "history", "epoch_step")


def checkpoint_dict(state: Any, callbacks: Sequence[Any]) -> dict[str, Any]:
    """Everything needed to resume ``state`` (a :class:`~trainwell.train.loop.TrainState`), at an epoch
    boundary or in the middle of an epoch (``epoch_step`` > 0)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": state.data_generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT,
        "version": VERSION,
        "epoch": state.epoch,
        "step": state.step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "callbacks": [{"class": type(cb).__name__, "state": cb.state_dict()} for cb in callbacks],
        "rng": rng,
        "history": list(state.history),
        "extra": dict(state.extra),
        # A callback (early stopping) ended training at this epoch's end: a resume must not train on. A stop
        # in the middle of an epoch is an interruption (a signal), which a resume continues.
        "stop_training": bool(state.stop_training) and state.epoch_step == 0,
        # the epoch in progress (all zero / None at an epoch boundary)
        "epoch_step": state.epoch_step,
        "epoch_rng_state": state.epoch_rng_state,
        "epoch_loss_sum": state.epoch_loss_sum,
        "epoch_correct": state.epoch_correct,
        "epoch_seen": state.epoch_seen,
        "epoch_seconds": state.epoch_seconds,
    }


def save_checkpoint(path: str | Path, state: Any, callbacks: Sequence[Any]) -> None:
    """Write the checkpoint atomically: a crash or a failed write leaves the previous checkpoint intact."""
    payload = checkpoint_dict(state, callbacks)
    write_with(path, lambda f: torch.save(payload, f))


def load_weights(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file; pickled code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds more than tensors and plain data (a pickled object), "
            f"which could run code on load, so nothing in it was run. Only files written by trainwell or by "
            f"torch.save(model.state_dict()) are accepted. ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable torch file (truncated or corrupt?): {str(e).splitlines()[0]}"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to be a trainwell checkpoint of this version with every key."""
    ckpt = load_weights(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a trainwell checkpoint (no format marker {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')} is not the supported {VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(missing)}; it cannot be resumed from")
    return ckpt


def restore_state(state: Any, ckpt: dict[str, Any], callbacks: Sequence[Any]) -> None:
    """Put the checkpoint's state back into ``state``, its callbacks and the RNGs."""
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"the checkpoint does not fit this model or optimizer (was the run's config.toml edited?): "
            f"{str(e).splitlines()[0]}"
        ) from None
    state.epoch, state.step = ckpt["epoch"], ckpt["step"]
    state.history = list(ckpt["history"])
    state.extra = dict(ckpt.get("extra", {}))
    state.stop_training = bool(ckpt.get("stop_training", False))
    state.epoch_step = ckpt["epoch_step"]
    if state.epoch_step:
        state.epoch_rng_state = ckpt["epoch_rng_state"]
        device = next(state.model.parameters()).device
        state.epoch_loss_sum = ckpt["epoch_loss_sum"].to(device)
        state.epoch_correct = ckpt["epoch_correct"].to(device)
        state.epoch_seen, state.epoch_seconds = ckpt["epoch_seen"], ckpt["epoch_seconds"]
    saved = {entry["class"]: entry["state"] for entry in ckpt["callbacks"]}
    for cb in callbacks:
        if type(cb).__name__ in saved:
            cb.load_state_dict(saved[type(cb).__name__])
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.data_generator.set_state(ckpt["rng"]["data"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
