"""Losses by Keras name, computed from logits so that the softmax/sigmoid is fused into the loss.

The model's output activation is built as its own last module (``trainwell.nn.build.split_output``); the loss
sees the logits before it. ``log_softmax`` + NLL (``F.cross_entropy``) is the numerically stable form of
Keras's ``sparse_categorical_crossentropy`` on softmax outputs; ``binary_cross_entropy_with_logits`` is that
of ``binary_crossentropy`` on sigmoid outputs. ``mse`` (Keras's mean squared error, on a linear output) is
the reconstruction loss of autoencoder pretraining (``trainwell.transfer.pretrain``); it has no accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainwell.registry import Registry


@dataclass(frozen=True)
class Loss:
    """A loss on logits, the output activation it belongs to, and how to count correct predictions."""

    output: str  # the output activation the model must end with
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mean loss over the batch
    sum_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # summed over the batch (for evaluation)
    # number of correct predictions; None for a loss without an accuracy (a regression: mse)
    correct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    label_dtype: torch.dtype


def _sse_per_example(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ over the batch of each example's mean squared error: so that ``sum / n`` is the mean loss ``fn``
    gives, as ``evaluate`` computes it (Keras's ``mse`` averages over the last axis, then over examples)."""
    return F.mse_loss(y_hat, y, reduction="sum") / (y[0].numel() if len(y) else 1)


def _bce(logits: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        logits.reshape(y.shape), y.to(logits.dtype), reduction=reduction
    )


LOSSES: Registry[Loss] = Registry(
    "loss",
    {
        "sparse_categorical_crossentropy": Loss(
            output="softmax",
            fn=F.cross_entropy,
            sum_fn=lambda logits, y: F.cross_entropy(logits, y, reduction="sum"),
            correct=lambda logits, y: (logits.argmax(dim=-1) == y).sum(),
            label_dtype=torch.int64,
        ),
        "binary_crossentropy": Loss(
            output="sigmoid",
            fn=lambda logits, y: _bce(logits, y, "mean"),
            sum_fn=lambda logits, y: _bce(logits, y, "sum"),
            # sigmoid(z) > 0.5 exactly when z > 0 (Keras's binary accuracy threshold)
            correct=lambda logits, y: ((logits.reshape(y.shape) > 0).to(y.dtype) == y).sum(),
            label_dtype=torch.float32,
        ),
        "mse": Loss(
            output="linear",
            fn=F.mse_loss,
            sum_fn=_sse_per_example,
            correct=None,
            label_dtype=torch.float32,
        ),
    },
)
