"""Magnitude pruning: set the smallest-magnitude dense kernel weights to zero, once or gradually in training.

A pruning *mask* per dense kernel (1 = kept, 0 = pruned) is computed with ``torch.nn.utils.prune``'s
``L1Unstructured`` method and applied by multiplying the kernel in place, so the model keeps plain tensor names
(``dense_1.linear.weight``, no ``weight_orig`` / ``weight_mask``) at every moment: a pruned model is an
ordinary model whose kernels hold zeros. Biases, BN parameters and activation parameters are not pruned
(TF-MOT's ``prune_low_magnitude`` prunes the kernels of dense layers only).

Three ways to a sparse model, as in the chapter:

- **after training**: :func:`prune_model` (one shot, ``scope="per_layer"`` or ``"global"``), optionally
  fine-tuned with the masks frozen (:class:`MagnitudePruning` with fixed masks);
- **during training**: ``train.pruning`` (:class:`PruningSpec`) — TF-MOT's ``PolynomialDecay`` schedule, the
  sparsity rising as a cubic from ``initial_sparsity`` at ``begin_step`` to ``final_sparsity`` at ``end_step``
  (Zhu & Gupta 2017, "To prune, or not to prune", arXiv:1710.01878);
- **l1 regularization** (``kernel_regularizer = { l1 = ... }``): weights are driven towards zero but with SGD
  rarely reach it exactly; :func:`kernel_sparsity` counts the weights below a threshold, and
  :func:`threshold_masks` zeroes them.

Absolute, not relative, amounts (``docs/keras-vs-torch.md``, G25): torch's module-level pruning functions
prune a fraction of the *still unpruned* weights (two ``l1_unstructured(amount=0.5)`` calls give 75 %),
while a TF-MOT schedule gives the *absolute* sparsity at each step. Masks here are always computed over the
whole kernel with a fresh all-ones default mask and the absolute target; since pruned weights are exactly
zero they rank lowest, so the pruned set only grows, and the result is the absolute target.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import parameters_to_vector, prune

from trainwell.errors import ConfigError
from trainwell.nn.layers import Dense
from trainwell.spec import Spec
from trainwell.train.callbacks import Callback

Scope = Literal["per_layer", "global"]
Masks = dict[str, torch.Tensor]

# TF-MOT's PolynomialDecay default exponent: the sparsity rises fast at first and flattens towards the end.
POLYNOMIAL_POWER = 3.0
# TF-MOT's default: update the masks every 100 steps.
PRUNING_FREQUENCY = 100


class PruningSpec(Spec):
    """``train.pruning``: TF-MOT's ``PolynomialDecay`` schedule, with its names and defaults.

    Steps count optimizer steps from the start of training (0 = the first batch), as TF-MOT's
    ``UpdatePruningStep`` does. ``scope = "per_layer"`` prunes each kernel to the scheduled sparsity (TF-MOT);
    ``"global"`` ranks all kernels together (torch's ``global_unstructured``).
    """

    final_sparsity: float = Field(ge=0, lt=1)
    initial_sparsity: float = Field(default=0.0, ge=0, lt=1)
    begin_step: int = Field(default=0, ge=0)
    end_step: int = Field(ge=0)
    frequency: int = Field(default=PRUNING_FREQUENCY, ge=1)
    power: float = Field(default=POLYNOMIAL_POWER, gt=0)
    schedule: Literal["polynomial"] = "polynomial"
    scope: Scope = "per_layer"

    @model_validator(mode="after")
    def _steps_ordered(self) -> PruningSpec:
        if self.end_step <= self.begin_step:
            raise ValueError(
                f"end_step ({self.end_step}) must be greater than begin_step ({self.begin_step}): the polynomial "
                "schedule needs a range of steps to rise over"
            )
        return self


def polynomial_sparsity(
    step: int,
    initial_sparsity: float,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    power: float = POLYNOMIAL_POWER,
) -> float:
    """TF-MOT's ``PolynomialDecay`` sparsity at ``step``, clamped outside ``[begin_step, end_step]``.

    ``s(step) = final + (initial - final) · (1 - p)^power``, ``p = clip((step - begin) / (end - begin), 0, 1)``.
    """
    p = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - p) ** power


def should_prune(step: int, begin_step: int, end_step: int, frequency: int) -> bool:
    """TF-MOT's ``_should_prune_in_step``: every ``frequency`` steps from ``begin_step`` to ``end_step``, inclusive."""
    return begin_step <= step <= end_step and (step - begin_step) % frequency == 0


def spec_schedule(spec: PruningSpec) -> Callable[[int], float | None]:
    """``step -> sparsity`` to prune to at that step, or None when the masks stay as they are."""

    def schedule(step: int) -> float | None:
        if not should_prune(step, spec.begin_step, spec.end_step, spec.frequency):
            return None
        return polynomial_sparsity(
            step, spec.initial_sparsity, spec.final_sparsity, spec.begin_step, spec.end_step, spec.power
        )

    return schedule


def prunable_kernels(model: nn.Module) -> dict[str, torch.Tensor]:
    """The kernels that pruning acts on: every dense layer's weight, by its state-dict name."""
    kernels = {
        f"{name}.linear.weight": m.linear.weight for name, m in model.named_modules() if isinstance(m, Dense)
    }
    if not kernels:
        raise ConfigError("pruning needs a model with dense layers, and this one has none")
    return kernels


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(
            f"sparsity must be in [0, 1) (the fraction of kernel weights set to zero), got {sparsity}"
        )


def magnitude_masks(model: nn.Module, sparsity: float, scope: Scope = "per_layer") -> Masks:
    """Masks keeping the largest-magnitude ``1 - sparsity`` of the kernel weights (absolute sparsity).

    ``per_layer``: each kernel loses ``round(sparsity · size)`` weights (``prune.L1Unstructured``); ``global``:
    all kernels are ranked together and lose ``round(sparsity · total)`` between them, as torch's
    ``prune.global_unstructured`` does (the same flatten–mask–split, without registering masks on modules).
    """
    check_sparsity(sparsity)
    kernels = prunable_kernels(model)
    method = prune.L1Unstructured(amount=sparsity)
    with torch.no_grad():
        if scope == "per_layer":
            return {name: method.compute_mask(w, torch.ones_like(w)) for name, w in kernels.items()}
        if scope != "global":
            raise ConfigError(f'pruning scope must be "per_layer" or "global", got {scope!r}')
        flat = parameters_to_vector(kernels.values())
        mask = method.compute_mask(flat, torch.ones_like(flat))
        masks, start = {}, 0
        for name, w in kernels.items():
            masks[name] = mask[start : start + w.numel()].view_as(w).clone()
            start += w.numel()
        return masks


def threshold_masks(model: nn.Module, threshold: float) -> Masks:
    """Masks keeping the kernel weights with ``|w| > threshold`` (for an l1-regularized model)."""
    if not threshold >= 0:
        raise ConfigError(f"threshold must be ≥ 0 (a weight magnitude), got {threshold}")
    with torch.no_grad():
        return {name: (w.abs() > threshold).to(w.dtype) for name, w in prunable_kernels(model).items()}


def apply_masks_(model: nn.Module, masks: Masks) -> None:
    """Multiply each masked kernel by its mask, in place: pruned weights become exactly zero."""
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            state[name].mul_(mask)


def prune_model(
    model: nn.Module,
    sparsity: float | None = None,
    scope: Scope = "per_layer",
    *,
    threshold: float | None = None,
) -> tuple[nn.Module, Masks]:
    """A copy of ``model`` with its kernels pruned, and the masks used: by magnitude to ``sparsity``, or
    every weight with ``|w| ≤ threshold``. ``model`` itself is left as it is."""
    if (sparsity is None) == (threshold is None):
        raise ConfigError(
            "give exactly one of sparsity (prune the smallest fraction) or threshold (prune |w| ≤ threshold)"
        )
    pruned = copy.deepcopy(model)
    masks = (
        threshold_masks(pruned, threshold)
        if threshold is not None
        else magnitude_masks(pruned, sparsity, scope)
    )
    apply_masks_(pruned, masks)
    return pruned, masks


# Below this magnitude an l1-regularized weight counts as zero in a run's metrics.json (l1 drives weights
# towards zero, rarely to exactly zero; 1e-3 is small against the ~1e-2..1e-1 scale of a trained kernel).
L1_ZERO_THRESHOLD = 1e-3


def kernel_sparsity(model: nn.Module, threshold: float = 0.0) -> dict[str, Any]:
    """The fraction of dense kernel weights with ``|w| ≤ threshold`` (0: exact zeros), overall and per layer.

    For an l1-regularized model, pass the magnitude below which a weight counts as zero (e.g. 1e-3); biases
    are not counted, as they are not pruned.
    """
    kernels = prunable_kernels(model)
    layers, zeros, total = {}, 0, 0
    with torch.no_grad():
        for name, w in kernels.items():
            n = int((w.abs() <= threshold).sum())
            layers[name.removesuffix(".linear.weight")] = n / w.numel()
            zeros, total = zeros + n, total + w.numel()
    return {
        "sparsity": zeros / total,
        "zero_weights": zeros,
        "kernel_weights": total,
        "threshold": threshold,
        "layers": layers,
    }


def sparse_state_dict(
    state: dict[str, torch.Tensor], names: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """``state`` with the 2-d tensors ``names`` (default: all 2-d float tensors) stored in CSR form, 32-bit
    indices: the storage a sparse model needs (values + column indices + row pointers)."""
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for key, value in state.items():
            if value.dim() == 2 and value.is_floating_point() and (names is None or key in names):
                csr = value.to_sparse_csr()
                value = torch.sparse_csr_tensor(
                    csr.crow_indices().to(torch.int32),
                    csr.col_indices().to(torch.int32),
                    csr.values(),
                    size=value.shape,
                    check_invariants=True,
                )
            out[key] = value
    return out


class MagnitudePruning(Callback):
    """Keeps dense kernels pruned while training: masks are (re)computed at the steps ``schedule`` says, and
    after every optimizer step the pruned weights are set back to zero (TF-MOT's ``weight * mask``).

    ``schedule(step)`` returns the absolute sparsity to prune to before that step, or None to keep the
    masks; without a schedule the given ``masks`` stay frozen (fine-tuning a pruned model). The masks are
    part of the callback's state, so a resumed run keeps them.

    With early stopping's ``restore_best_weights``, the restored weights carry the sparsity of their epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Callable[[int], float | None] | None = None,
        *,
        scope: Scope = "per_layer",
        masks: Masks | None = None,
        last_step: int | None = None,
    ):
        if schedule is None and masks is None:
            raise ValueError("MagnitudePruning needs a schedule, or masks to keep frozen")
        self.model = model
        self.schedule = schedule
        self.scope = scope
        self.masks: Masks = {}
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (kernel, mask), applied after each step
        self._set_masks(dict(masks or {}))
        self.last_step = last_step  # the schedule's last pruning step, checked against the run's length

    def _set_masks(self, masks: Masks) -> None:
        """Keep ``masks`` and the kernels they apply to (looked up once, not at every step)."""
        params = dict(self.model.named_parameters())
        self.masks = masks
        self._pairs = [(params[name], mask) for name, mask in masks.items()]

    def _apply(self) -> None:
        with torch.no_grad():
            for weight, mask in self._pairs:
                weight.mul_(mask)

    @classmethod
    def from_spec(cls, model: nn.Module, spec: PruningSpec) -> MagnitudePruning:
        return cls(model, spec_schedule(spec), scope=spec.scope, last_step=spec.end_step)

    def on_train_begin(self, trainer: Any) -> None:
        total = trainer.spec.epochs * trainer.steps_per_epoch
        if self.last_step is not None and self.last_step >= total:
            raise ConfigError(
                f"train.pruning.end_step = {self.last_step}, but training takes only {total} steps "
                f"({trainer.spec.epochs} epochs × {trainer.steps_per_epoch} steps, numbered from 0), so "
                f"final_sparsity would never be reached; set end_step ≤ {total - 1} or train longer"
            )
        if self.masks:  # given for fine-tuning, or restored from a checkpoint: on the model's device now
            device = next(self.model.parameters()).device
            self._set_masks({k: v.to(device) for k, v in self.masks.items()})
            self._apply()

    def on_step_begin(self, trainer: Any, step: int) -> None:
        if self.schedule is None:
            return
        sparsity = self.schedule(step)
        if sparsity is not None:
            self._set_masks(magnitude_masks(self.model, sparsity, self.scope))
            self._apply()

    def on_step_end(self, trainer: Any, step: int) -> None:
        self._apply()

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        logs["sparsity"] = kernel_sparsity(self.model)["sparsity"]

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {k: v.detach().cpu() for k, v in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_masks(dict(state["masks"]))


def storage_bytes(state: dict[str, torch.Tensor]) -> int:
    """The size of ``state`` as ``torch.save`` writes it, in bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes
