"""Unsupervised pretraining: an autoencoder on the training inputs, whose encoder becomes the classifier's
lower layers (``pretrain = { method = "autoencoder", layers = N, epochs = E }``).

The chapter's *Unsupervised Pretraining* (Géron, "Training Deep Neural Networks"; the autoencoders themselves
are its chapter 17): when labels are scarce but inputs are plentiful, train an autoencoder on all the
inputs, then reuse its lower layers and train the classifier on the few labelled ones.

- **Encoder**: the classifier's own first ``N`` dense layers and every layer before them (flatten, BN,
  dropout, activations), up to its next dense layer — the same modules, so the pretrained weights are the
  classifier's when pretraining ends.
- **Decoder**: the mirror image, built with the same layer specs: dense layers of the encoder's widths in
  reverse order (the encoder's activations and initializers), then a linear dense layer back to the
  flattened input. The whole stack is trained at once (not greedily layer by layer) with the mean squared
  reconstruction error, Keras's ``mse``, on the flattened inputs.
- **Data**: ``data = "all"`` (the default) is every training image outside the validation split — the
  unlabeled set, ignoring ``data.limit_train``; ``"train"`` is the labelled training split only. The
  validation split measures the reconstruction error; the test set is never seen.
- **Training**: ``epochs``, ``optimizer`` (default ``train.optimizer``) and ``batch_size`` (default
  ``train.batch_size``) with the run's seed; torch's global RNG is forked, so the classifier's own
  training draws the same dropout masks as a run without pretraining.

The record (reconstruction loss before and after, per-epoch history) goes to the run's ``transfer.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from trainwell.errors import ConfigError
from trainwell.nn.build import ModelSpec, build_model
from trainwell.nn.layers import DenseSpec, expand
from trainwell.spec import Spec
from trainwell.train.optimizers import OptimizerSpec


class PretrainSpec(Spec):
    """The ``[pretrain]`` table."""

    method: Literal["autoencoder"]
    layers: int = Field(default=1, ge=1)  # the classifier's first N dense layers are the encoder
    epochs: int = Field(ge=1)
    data: Literal["all", "train"] = "all"
    optimizer: OptimizerSpec | None = None  # None: train.optimizer
    batch_size: int | None = Field(default=None, ge=1)


def encoder_layers(spec: ModelSpec, n_dense: int) -> int:
    """How many leading layers of the model form the encoder of ``n_dense`` dense layers: every layer before
    the model's ``n_dense + 1``-th dense layer."""
    dense = [i for i, layer in enumerate(expand(spec.layers)) if isinstance(layer, DenseSpec)]
    if n_dense >= len(dense):
        raise ConfigError(
            f"pretrain.layers: {n_dense} dense layers for the encoder, but the model has {len(dense)} dense "
            f"layers, the last of them its output; give pretrain.layers = 1 to {len(dense) - 1}"
        )
    return dense[n_dense]


def decoder_spec(spec: ModelSpec, n_dense: int, input_size: int) -> ModelSpec:
    """The decoder mirroring the encoder of ``n_dense`` dense layers, ending in a linear layer of
    ``input_size`` units (see the module docstring)."""
    dense = [layer for layer in expand(spec.layers) if isinstance(layer, DenseSpec)][:n_dense]
    layers: list[dict[str, Any]] = [
        {
            "type": "dense",
            "units": below.units,
            "activation": upper.activation.model_dump(),
            "kernel_initializer": upper.kernel_initializer.model_dump(),
        }
        for upper, below in zip(dense[::-1], dense[-2::-1], strict=False)
    ]
    layers.append({"type": "dense", "units": input_size})  # linear output, for the squared error
    return ModelSpec.model_validate({"layers": layers, "check_self_normalization": False})


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@dataclass
class Reconstruction:
    """The autoencoder's view of a dataset: inputs, and the flattened inputs as targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray


def autoencoder(
    model: nn.Sequential, spec: ModelSpec, n_dense: int, input_shape: tuple[int, ...]
) -> nn.Sequential:
    """The encoder (``model``'s own first layers, shared) followed by a new mirrored decoder."""
    count = encoder_layers(spec, n_dense)
    code = [layer for layer in expand(spec.layers) if isinstance(layer, DenseSpec)][n_dense - 1].units
    decoder = build_model(decoder_spec(spec, n_dense, math.prod(input_shape)), (code,))
    return nn.Sequential(*list(model.children())[:count], decoder)


def pretrain_autoencoder(
    config: Any, model: nn.Sequential, dataset: Any, progress: bool = False
) -> dict[str, Any]:
    """Pretrain ``model``'s encoder as ``config.pretrain`` says (in place); returns the record for
    ``transfer.json``: the layers pretrained, the examples used, the validation reconstruction loss before
    and after, and the history."""
    from trainwell.config import TrainSpec
    from trainwell.data import load_dataset
    from trainwell.train.loop import evaluate, fit

    spec: PretrainSpec = config.pretrain
    if spec.data == "all" and config.data.limit_train is not None:
        dataset = load_dataset(config.data.model_copy(update={"limit_train": None}))
    data = Reconstruction(dataset.x_train, _flat(dataset.x_train), dataset.x_valid, _flat(dataset.x_valid))
    train = config.train
    optimizer = spec.optimizer or train.optimizer
    if optimizer.learning_rate == "auto":
        raise ConfigError(
            "pretrain.optimizer: give a learning rate for pretraining (the LR finder runs only "
            "for the classifier): pretrain.optimizer = { name = ..., learning_rate = ... }"
        )
    ae_spec = TrainSpec.model_validate(
        {
            "loss": "mse",
            "optimizer": optimizer.model_dump(),
            "epochs": spec.epochs,
            "batch_size": spec.batch_size or train.batch_size,
            "seed": train.seed,
            "device": train.device,
            "threads": train.threads,
            "eval_batch_size": train.eval_batch_size,
            "compile": train.compile,
            "precision": train.precision,
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        ae = autoencoder(model, config.model, spec.layers, dataset.input_shape)
        before = (
            evaluate(ae, data.x_valid, data.y_valid, "mse", train.eval_batch_size)
            if len(data.x_valid)
            else None
        )
        callbacks = []
        if progress:
            from trainwell.train.progress import ProgressBar

            callbacks.append(ProgressBar())
        state = fit(ae, data, ae_spec, callbacks=callbacks)
    model.train()
    encoder = list(model.named_children())[: encoder_layers(config.model, spec.layers)]
    return {
        "method": "autoencoder",
        "layers": [name for name, _ in encoder],
        "parameters": sum(p.numel() for _, m in encoder for p in m.parameters()),
        "examples": len(data.x_train),
        "seconds": sum(row["seconds"] for row in state.history),  # not in the run's train_seconds
        "val_loss_before": before["loss"] if before else None,
        "val_loss_after": state.history[-1].get("val_loss") if state.history else None,
        "history": [{k: v for k, v in row.items() if "accuracy" not in k} for row in state.history],
    }
