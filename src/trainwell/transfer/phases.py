"""Training in phases: ``train.phases``, each with its epochs, what is frozen and its learning rate.

The chapter's fine-tuning recipe as a config::

    [train]
    phases = [{ epochs = 4, freeze = "reused" },
              { epochs = 16, freeze = "none", learning_rate = 1e-4 }]

``freeze`` is ``"reused"`` (the layers copied by ``model.from`` or pretrained by ``pretrain``), ``"none"``,
or a number of lower layers. ``train.epochs`` is the sum of the phases' epochs (filled in when left out).

How freezing works, as Keras defines ``trainable = False``:

- a frozen layer's parameters get ``requires_grad = False``, so they get no gradient and no update (torch's
  optimizers skip a parameter whose gradient is None, momentum and weight decay included);
- a frozen Batch Normalization layer runs in inference mode (its moving statistics normalize, and are not
  updated): ``fit`` puts the whole model in training mode at each epoch and evaluation restores it, so a
  forward pre-hook on each frozen BN layer sets it back to inference mode before it runs;
- when a phase begins, the optimizer is rebuilt (Keras: compile again after changing ``trainable``): fresh
  state, the phase's learning rate (or ``train.optimizer``'s), and ``fit`` rebuilds its step for the new
  set of trainable parameters. It holds every parameter of the model, so that a checkpoint's optimizer state
  fits whatever phase it was written in; the frozen ones are skipped for having no gradient.

The callback's state is the phase it last set up, saved in the checkpoint: a resumed run freezes the same
layers and keeps the optimizer state it restored when it resumes inside that phase, and rebuilds it when it
resumes at the start of the next one.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from trainwell.errors import ConfigError
from trainwell.nn.layers import BatchNormSpec, expand
from trainwell.spec import Spec
from trainwell.train.callbacks import Callback
from trainwell.train.optimizers import build_optimizer


class PhaseSpec(Spec):
    """One entry of ``train.phases``."""

    epochs: int = Field(ge=1)
    freeze: Literal["reused", "none"] | int = "none"  # an int: the model's first N layers
    learning_rate: float | None = Field(default=None, gt=0)  # None: train.optimizer's


def fill_epochs(data: Any) -> Any:
    """For ``TrainSpec``'s before-validator: ``epochs`` = the sum of the phases' epochs when not given; an
    explicit ``epochs`` must equal it."""
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        return data
    counts = [p.get("epochs") for p in data["phases"] if isinstance(p, dict)]
    if not all(isinstance(c, int) for c in counts) or len(counts) != len(data["phases"]):
        return data  # the phases' own validation reports it
    total = sum(counts)
    if "epochs" not in data:
        return {**data, "epochs": total}
    if data["epochs"] != total:
        raise ValueError(
            f"epochs: {data['epochs']} differs from the sum of train.phases' epochs "
            f"({' + '.join(map(str, counts))} = {total}); leave train.epochs out or make them equal"
        )
    return data


def frozen_count(phase: PhaseSpec, reused: int, key: str = "train.phases") -> int:
    """How many leading layers ``phase`` freezes, given ``reused`` reused or pretrained layers."""
    if phase.freeze == "none":
        return 0
    if phase.freeze == "reused":
        if reused == 0:
            raise ConfigError(
                f'{key}.freeze: "reused" needs layers from model.from or pretrain, and this config has none; '
                'set model.from (or pretrain), or freeze = "none" / a number of layers'
            )
        return reused
    return int(phase.freeze)


def _hold_in_inference_mode(module: nn.Module, args: Any) -> None:
    module.training = False


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def freeze_(model: nn.Sequential, count: int) -> list[torch.utils.hooks.RemovableHandle]:
    """Freeze the first ``count`` layers of ``model`` and unfreeze the rest; returns the hook handles that
    hold the frozen BN layers in inference mode (remove them to release those layers)."""
    handles = []
    for index, layer in enumerate(model.children()):
        frozen = index < count
        for p in layer.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            for m in layer.modules():
                if _is_bn(m):
                    m.eval()
                    handles.append(m.register_forward_pre_hook(_hold_in_inference_mode))
    return handles


class Phases(Callback):
    """Sets up each phase of ``train.phases`` at its first epoch (see the module docstring)."""

    def __init__(
        self,
        model: nn.Sequential,
        phases: list[PhaseSpec],
        frozen: list[int],
        optimizer_spec: Any,
        learning_rate: float | None = None,
    ):
        self.model, self.phases, self.frozen = model, phases, frozen
        self.optimizer_spec, self.learning_rate = optimizer_spec, learning_rate
        self.starts = [sum(p.epochs for p in phases[:i]) for i in range(len(phases))]
        self.phase: int | None = None  # the phase set up last (restored from a checkpoint)
        self.applied: int | None = None  # the phase whose freezing this process has applied
        self.handles: list[Any] = []

    def phase_at(self, epoch: int) -> int:
        """The phase epoch ``epoch`` (0-based) belongs to (the last one past the end)."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        target = self.phase_at(epoch)
        if target == self.applied:
            return
        for h in self.handles:
            h.remove()
        self.handles = freeze_(self.model, self.frozen[target])
        if target != self.phase:  # a new phase, not the one a checkpoint restored: a fresh optimizer
            lr = self.phases[target].learning_rate or self.learning_rate
            trainer.optimizer = build_optimizer(self.optimizer_spec, self.model.parameters(), lr)
        self.phase = self.applied = target

    def on_train_end(self, trainer: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase = state["phase"]


def reused_of(config: Any) -> int:
    """The number of layers of ``config``'s model that come from ``model.from`` or ``pretrain``."""
    from trainwell.transfer.pretrain import encoder_layers

    if getattr(config.model, "from_", None) is not None:
        return config.model.reused_count()
    if getattr(config, "pretrain", None) is not None:
        return encoder_layers(config.model, config.pretrain.layers)
    return 0


def phases_callback(config: Any, model: nn.Sequential) -> Phases | None:
    """The :class:`Phases` callback ``config.train.phases`` asks for, or None."""
    phases = config.train.phases
    if not phases:
        return None
    reused = reused_of(config)
    frozen = [frozen_count(p, reused, f"train.phases[{i}]") for i, p in enumerate(phases)]
    lr = config.train.optimizer.learning_rate
    return Phases(model, list(phases), frozen, config.train.optimizer, None if lr == "auto" else float(lr))


def transfer_problem(config: Any) -> str | None:
    """A config error in ``model.reuse``, ``pretrain.layers`` or ``train.phases`` found without files or data
    (for ``Config``'s cross-checks), or None."""
    try:
        reused_of(config)  # a reuse count or encoder the model cannot have
    except ConfigError as e:
        return str(e)
    phases = config.train.phases
    if not phases:
        return None
    if config.train.schedule is not None:
        return (
            "train.schedule: a learning-rate schedule cannot be combined with train.phases (each phase sets "
            "its own learning rate); remove one of them"
        )
    n_layers = len(expand(config.model.layers))
    try:
        reused = reused_of(config)
        for i, p in enumerate(phases):
            if isinstance(p.freeze, int) and not 0 <= p.freeze <= n_layers:
                return f"train.phases[{i}].freeze: {p.freeze} layers, but the model has {n_layers}"
            n = frozen_count(p, reused, f"train.phases[{i}]")
            if config.train.compile is True and any(
                isinstance(x, BatchNormSpec) for x in expand(config.model.layers)[:n]
            ):
                return (
                    f"train.compile: the compiled step runs Batch Normalization in training mode, but train.phases[{i}] "
                    'freezes a batch_norm layer, which must run in inference mode; set train.compile = "auto" (it '
                    "takes the eager step then) or false"
                )
    except ConfigError as e:
        return str(e)
    return None


def freeze_first_phase(model: nn.Sequential, config: Any) -> None:
    """Freeze what the first phase of ``config.train.phases`` freezes (for ``trainwell summary``)."""
    if config.train.phases:
        for h in freeze_(model, frozen_count(config.train.phases[0], reused_of(config))):
            h.remove()


def describe_transfer(config: Any) -> list[str]:
    """For ``trainwell summary``: where the reused layers come from, then one line per phase (epochs,
    learning rate, frozen layers)."""
    lines = []
    reused = reused_of(config)
    if getattr(config.model, "from_", None) is not None:
        lines.append(f"reused: the first {reused} layers, copied from {config.model.from_}")
    elif getattr(config, "pretrain", None) is not None:
        lines.append(
            f"pretrained: the first {reused} layers, as the encoder of an autoencoder "
            f"({config.pretrain.epochs} epochs)"
        )
    for i, p in enumerate(config.train.phases or []):
        n = frozen_count(p, reused, f"train.phases[{i}]")
        lr = p.learning_rate or config.train.optimizer.learning_rate
        what = f"the first {n} layers frozen" if n else "nothing frozen"
        lr_text = f"{lr:g}" if isinstance(lr, float) else str(lr)
        lines.append(f"phase {i + 1}: {p.epochs} epochs, learning rate {lr_text}, {what}")
    return lines
