"""The learning-rate finder: train briefly while the LR grows exponentially, and read a good LR off the loss.

As the chapter describes it (and Smith 2015, "Cyclical Learning Rates for Training Neural Networks"): start
at a tiny LR (``start_lr``, 1e-6) and multiply it by a constant factor every step so that it reaches
``end_lr`` (10) after at most one epoch, ``η_i = start · (end/start)^(i/(n−1))``; record the loss of every
step; stop early once the loss explodes. The raw losses are noisy, so they are smoothed by a bias-corrected
exponential moving average (``a_i = β·a_{i−1} + (1−β)·loss_i``, ``smoothed_i = a_i / (1 − β^(i+1))``, β =
``smoothing`` = 0.98, as fastai's ``lr_find``); the loss has exploded when it is not finite or the smoothed
loss exceeds ``diverge_factor`` (4) times its minimum so far.

**The suggestion rule** (the chapter's: "about 10 times lower than the turning point"): the LR at which the
smoothed loss is lowest — where it stops falling and starts to climb — divided by ``divisor`` (10).

:func:`find_lr` leaves the model and the optimizer exactly as it found them — weights, buffers, gradients,
optimizer state and hyperparameters, training mode and torch's RNG state — bit for bit; a run with
``learning_rate = "auto"`` is therefore the same run as one with the found LR written in.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field, model_validator
from torch import nn

from trainwell.errors import ConfigError, TrainingError
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.config import Config, TrainSpec


class LRFinderSpec(Spec):
    """``train.lr_finder``: how the finder sweeps and what it suggests."""

    start_lr: float = Field(default=1e-6, gt=0)
    end_lr: float = Field(default=10.0, gt=0)
    steps: int | None = Field(default=None, ge=2)  # default: one epoch (never more)
    smoothing: float = Field(default=0.98, ge=0, lt=1)
    diverge_factor: float = Field(default=4.0, gt=1)
    divisor: float = Field(default=10.0, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LRFinderSpec:
        if not self.start_lr < self.end_lr:
            raise ValueError(f"start_lr ({self.start_lr}) must be below end_lr ({self.end_lr})")
        return self


@dataclass
class LRFinderResult:
    """What a sweep found: every step's LR and loss (raw and smoothed), the minimum and the suggestion."""

    suggested_lr: float
    min_loss_lr: float
    lrs: list[float]
    losses: list[float]  # smoothed
    raw_losses: list[float]
    stopped_early: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sweep_lr(i: int, n: int, start_lr: float, end_lr: float) -> float:
    """The LR of step ``i`` of ``n``: ``start · (end/start)^(i/(n−1))`` (start at 0, end at n−1)."""
    return start_lr * (end_lr / start_lr) ** (i / (n - 1))


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average: ``a_i = β·a_{i−1} + (1−β)·x_i``, ``a_i / (1 − β^(i+1))``."""
    out, avg = [], 0.0
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float], divisor: float = 10.0) -> tuple[float, float]:
    """``(suggested_lr, min_loss_lr)``: the LR of the lowest smoothed loss, and that divided by ``divisor``."""
    finite = [(loss, i) for i, loss in enumerate(smoothed) if math.isfinite(loss)]
    if not finite:
        raise TrainingError(
            "the LR finder saw no finite loss; lower train.lr_finder.start_lr or check the data "
            "(unscaled inputs?)"
        )
    best = min(finite)[1]
    return lrs[best] / divisor, lrs[best]


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "training": model.training,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, snap: dict[str, Any]) -> None:
    model.load_state_dict(snap["model"])
    optimizer.load_state_dict(snap["optimizer"])
    for p, g in zip(model.parameters(), snap["grads"], strict=True):
        p.grad = g
    model.train(snap["training"])
    torch.set_rng_state(snap["rng"])
    if snap["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(snap["cuda_rng"])


def find_lr(
    model: nn.Module,
    dataset: Any,
    spec: TrainSpec | dict,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    finder: LRFinderSpec | dict | None = None,
) -> LRFinderResult:
    """Sweep the LR on ``dataset``'s training data and suggest one (see the module docstring).

    ``spec`` gives the loss, optimizer, batch size, seed (for the data order) and precision; ``finder`` the
    sweep (default ``spec.lr_finder``). ``optimizer`` is the one to sweep with (default: built from
    ``spec.optimizer``); it, like ``model``, is left exactly as found. The model stays on its device.
    """
    from trainwell.config import TrainSpec
    from trainwell.nn.build import split_output
    from trainwell.train.losses import LOSSES
    from trainwell.train.optimizers import build_optimizer
    from trainwell.train.step import make_step

    if isinstance(spec, dict):
        spec = TrainSpec.model_validate(spec)
    finder = spec.lr_finder if finder is None else finder
    if isinstance(finder, dict):
        finder = LRFinderSpec.model_validate(finder)
    if optimizer is None:
        optimizer = build_optimizer(spec.optimizer, model.parameters(), learning_rate=finder.start_lr)
    device = next(model.parameters()).device
    loss_spec = LOSSES[spec.loss]
    x = torch.as_tensor(dataset.x_train).to(device=device, dtype=torch.float32)
    y = torch.as_tensor(dataset.y_train).to(device=device, dtype=loss_spec.label_dtype)
    if len(x) == 0:
        raise ConfigError("the LR finder needs training data, and the training set is empty")
    batch = spec.batch_size
    per_epoch = math.ceil(len(x) / batch)
    n = min(finder.steps or per_epoch, per_epoch)
    if n < 2:
        raise ConfigError(
            f"the LR finder needs at least 2 steps, but one epoch is {per_epoch} step at batch_size "
            f"{batch}; use a smaller train.batch_size or more data"
        )
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(spec.seed)).to(device)
    xs, ys = x[order], y[order]

    snap = _snapshot(model, optimizer)
    lrs: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    avg, best, stopped = 0.0, math.inf, False
    try:
        model.train()
        step = make_step(model, split_output(model)[0], loss_spec, optimizer, spec.precision)
        for i in range(n):
            lr = sweep_lr(i, n, finder.start_lr, finder.end_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            value = float(step(xs[i * batch : (i + 1) * batch], ys[i * batch : (i + 1) * batch])[0])
            lrs.append(lr)
            raw.append(value)
            avg = finder.smoothing * avg + (1 - finder.smoothing) * value
            smoothed.append(avg / (1 - finder.smoothing ** (i + 1)))
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > finder.diverge_factor * best:
                stopped = True
                break
            best = min(best, smoothed[-1])
    finally:
        _restore(model, optimizer, snap)
    suggested, at_min = suggest(lrs, smoothed, finder.divisor)
    return LRFinderResult(
        suggested_lr=suggested,
        min_loss_lr=at_min,
        lrs=lrs,
        losses=smoothed,
        raw_losses=raw,
        stopped_early=stopped,
        settings=finder.model_dump(),
    )


def find_lr_for_config(config: Config, dataset: Any = None) -> LRFinderResult:
    """The finder on the model a run of ``config`` starts from (same seed, same device): ``trainwell lr-find``."""
    from trainwell.data import load_dataset
    from trainwell.nn.build import build_model
    from trainwell.train.loop import resolve_device

    if dataset is None:
        dataset = load_dataset(config.data)
    torch.manual_seed(config.train.seed)  # as runs.py does before building the run's model
    model = build_model(config.model, dataset.input_shape).to(resolve_device(config.train.device))
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    return find_lr(model, dataset, config.train)


def resolve_learning_rate(config: Config, dataset: Any) -> tuple[Config, LRFinderResult | None]:
    """``config`` with ``learning_rate = "auto"`` replaced by the finder's suggestion (and the finder's
    result), or ``config`` unchanged (and None) when its learning rate is a number."""
    from trainwell.config import config_to_dict, validate_config

    if config.train.optimizer.learning_rate != "auto":
        return config, None
    result = find_lr_for_config(config, dataset)
    data = config_to_dict(config)
    data["train"]["optimizer"]["learning_rate"] = result.suggested_lr
    return validate_config(data, source="the config with the LR finder's learning rate"), result


def plot_lr_finder(result: LRFinderResult, path: str | Path) -> None:
    """Write loss against LR (log axis), raw and smoothed, with the suggestion marked, to ``path`` (the
    format follows the suffix: .png, .svg, .pdf), atomically."""
    from matplotlib.figure import Figure

    from trainwell.io import write_bytes

    path = Path(path)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.raw_losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", linewidth=1.8, label="smoothed loss")
    ax.axvline(
        result.min_loss_lr,
        color="0.4",
        linestyle=":",
        label=f"lowest smoothed loss ({result.min_loss_lr:.3g})",
    )
    ax.axvline(
        result.suggested_lr, color="C3", linestyle="--", label=f"suggested LR ({result.suggested_lr:.3g})"
    )
    ax.set_xscale("log")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:  # keep the exploded tail from flattening the curve
        low, high = min(finite), finite[0]
        ax.set_ylim(low - 0.1 * (high - low + 1e-12), max(high, low) + 0.5 * (high - low + 1e-12))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR finder")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


LR_FINDER_JSON = "lr_finder.json"


def found_lr_metrics(run_dir: str | Path) -> dict[str, float]:
    """``{"found_learning_rate": ...}`` for a run whose LR the finder chose (its ``lr_finder.json``), else {}."""
    import json

    path = Path(run_dir) / LR_FINDER_JSON
    if not path.is_file():
        return {}
    found = json.loads(path.read_text())
    return {"found_learning_rate": found["suggested_lr"], "lr_finder_min_loss_lr": found["min_loss_lr"]}
