"""Reusing pretrained layers (Géron, "Training Deep Neural Networks"): transfer learning from another run
(``model.from``, :mod:`~trainwell.transfer.reuse`), training in phases with frozen layers (``train.phases``,
:mod:`~trainwell.transfer.phases`) and unsupervised autoencoder pretraining (``pretrain``,
:mod:`~trainwell.transfer.pretrain`). Pretraining on an auxiliary task is ``model.from`` a run trained on
that task.

:func:`prepare_model` is what a new run does before training: copy or pretrain its lower layers, and
record where they came from in ``transfer.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainwell.io import write_json
from trainwell.transfer.phases import Phases, PhaseSpec, freeze_, phases_callback
from trainwell.transfer.pretrain import PretrainSpec, pretrain_autoencoder
from trainwell.transfer.reuse import REUSE_JSON, TransferModelSpec, copy_layers, reuse_into, source_model

__all__ = [
    "REUSE_JSON",
    "PhaseSpec",
    "Phases",
    "PretrainSpec",
    "TransferModelSpec",
    "copy_layers",
    "freeze_",
    "phases_callback",
    "prepare_model",
    "pretrain_autoencoder",
    "reuse_into",
    "source_model",
]


def prepare_model(
    config: Any, model: nn.Sequential, dataset: Any, run_dir: Path | None = None, progress: bool = False
) -> dict[str, Any] | None:
    """Give a freshly built ``model`` the lower layers ``config`` asks for (``model.from`` or ``pretrain``);
    returns the record (also written to ``run_dir/transfer.json``), or None when it asks for neither."""
    record = reuse_into(config.model, model)
    if record is None and getattr(config, "pretrain", None) is not None:
        record = pretrain_autoencoder(config, model, dataset, progress=progress)
    if record is not None and run_dir is not None:
        write_json(run_dir / REUSE_JSON, record)
    return record


def check_transfer(config: Any, input_shape: tuple[int, ...]) -> None:
    """The transfer checks that need files or the data, made before a run folder is created: the source run
    of ``model.from`` exists, has finished and fits the first ``reuse`` layers; ``pretrain.layers`` leaves an
    output layer; ``freeze = "reused"`` has reused layers."""
    import torch

    from trainwell.nn.build import build_model
    from trainwell.transfer.phases import frozen_count, reused_of

    if getattr(config.model, "from_", None) is not None:
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # a throwaway build: keep the seeded RNG
            reuse_into(config.model, build_model(config.model, input_shape))
    reused = reused_of(config)  # pretrain.layers is checked here
    for i, phase in enumerate(config.train.phases or []):
        frozen_count(phase, reused, f"train.phases[{i}]")
