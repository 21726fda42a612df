"""The training step: forward to logits, loss, backward, optimizer step, constraints — one batch.

``make_step`` returns a function ``step(xb, yb) -> (loss, logits)`` (both detached) for the loop to call once
per batch. It is the one place a faster implementation (a compiled whole-step graph, CUDA graphs) plugs in:
anything with the same signature and the same effect on the model and optimizer will do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainwell.nn.constraints import apply_constraints, constrained
from trainwell.nn.regularizers import penalty, penalty_terms
from trainwell.train.losses import Loss

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_step(model: nn.Module, logits_model: nn.Module, loss: Loss, optimizer: torch.optim.Optimizer) -> StepFn:
    """The eager step: plain autograd and ``optimizer.step()`` (clipping runs in its pre-hook)."""
    terms = penalty_terms(model)
    limits = constrained(model)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits_model(xb)
        value = loss.fn(logits, yb)
        if terms:
            value = value + penalty(terms)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if limits:
            apply_constraints(limits)
        return value.detach(), logits.detach()

    return step
