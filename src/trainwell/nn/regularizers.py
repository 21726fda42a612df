"""Keras's kernel regularizers: a penalty added to the training loss.

``l1 · Σ|w| + l2 · Σw²`` per regularized kernel, exactly Keras's ``L1L2`` (the full ``l2 · Σw²``: its gradient
is ``2 · l2 · w``, so Keras ``l2 = 0.01`` is torch SGD ``weight_decay = 0.02``; ``docs/keras-vs-torch.md``, G12).
torch has no loss-side regularizer (its ``weight_decay`` acts in the optimizer and on every parameter of a
group), so this is written here. As in Keras, the training loss that is reported includes the penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainwell.nn.layers import Dense


@dataclass(frozen=True)
class PenaltyTerm:
    weight: torch.Tensor
    l1: float
    l2: float


def penalty_terms(model: nn.Module) -> list[PenaltyTerm]:
    """The regularized kernels of ``model`` (collect once, before the training loop)."""
    return [
        PenaltyTerm(m.linear.weight, m.regularizer.l1, m.regularizer.l2)
        for m in model.modules()
        if isinstance(m, Dense) and m.regularizer is not None
    ]


def penalty(terms: list[PenaltyTerm]) -> torch.Tensor | None:
    """``Σ l1·Σ|w| + l2·Σw²`` over ``terms``, or None when there are none (so the loop adds nothing)."""
    total = None
    for t in terms:
        if t.l1:
            p = t.l1 * t.weight.abs().sum()
            total = p if total is None else total + p
        if t.l2:
            p = t.l2 * t.weight.square().sum()
            total = p if total is None else total + p
    return total
