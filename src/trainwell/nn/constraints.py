"""Keras's max-norm weight constraint, applied after every optimizer step.

Each unit's incoming weight vector (a row of a torch ``Linear`` weight, a column of a Keras kernel) is rescaled
to norm ≤ ``max_norm``. ``torch.renorm`` does exactly this projection; Keras's ``MaxNorm`` computes
``w · clip(‖w‖, 0, r) / (ε + ‖w‖)``, which differs only by its ε = 1e-7 on rows already within the bound.
"""

from __future__ import annotations

import torch
from torch import nn

from trainwell.nn.layers import Dense


def max_norm_(weight: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Rescale, in place, every row of ``weight`` whose L2 norm exceeds ``max_norm`` to that norm."""
    with torch.no_grad():
        return weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))


def constrained(model: nn.Module) -> list[tuple[torch.Tensor, float]]:
    """``(weight, max_norm)`` for every constrained kernel of ``model`` (collect once, before the loop)."""
    return [(m.linear.weight, m.max_norm) for m in model.modules() if isinstance(m, Dense) and m.max_norm]


def apply_constraints(pairs: list[tuple[torch.Tensor, float]]) -> None:
    for weight, limit in pairs:
        max_norm_(weight, limit)
