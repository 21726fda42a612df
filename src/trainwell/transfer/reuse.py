"""Reusing a trained model's lower layers: ``model.from`` and ``model.reuse`` (transfer learning).

The chapter's recipe (Géron, "Training Deep Neural Networks", *Reusing Pretrained Layers*): copy the lower
layers of a model trained on a similar task, give the new model its own output layer, and train it — first
with the copied layers frozen, then fine-tuned with a lower learning rate (:mod:`trainwell.transfer.phases`).

The new model is the one ``model.layers`` describes, in full, so a run folder can always be rebuilt from its
own ``config.toml``; ``model.from`` names the run folder whose ``model.pt`` gives the weights of its first
``reuse`` layers (counted in the built model's layers: ``flatten``, ``dense``, ``batch_norm``, ... as the
summary lists them, ``repeat`` unrolled). ``reuse = "all_but_output"`` (the default) is every layer before
the new model's last dense layer. The weights are *copied* (``load_state_dict``), so training the new model
never changes the source run, and the source's ``model.pt`` is only read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field
from torch import nn

from trainwell.errors import ConfigError
from trainwell.nn.build import ModelSpec
from trainwell.nn.layers import DenseSpec, expand

REUSE_JSON = "transfer.json"  # in the new run's folder: where its reused or pretrained layers came from


class TransferModelSpec(ModelSpec):
    """The ``[model]`` table with the two keys of transfer learning, ``from`` and ``reuse``."""

    # ``from`` is a Python keyword: the field is ``from_``, read and written (config.toml) as ``from``.
    model_config = ConfigDict(serialize_by_alias=True)

    # a finished run's folder, or "@variant" in an experiment (trainwell.transfer.variants)
    from_: str | None = Field(default=None, alias="from")
    reuse: Literal["all_but_output"] | int = Field(default="all_but_output")

    def reused_count(self) -> int:
        """How many of the built model's first layers come from ``from`` (0 without it)."""
        if self.from_ is None:
            return 0
        return reused_layers(self)


def reused_layers(spec: ModelSpec, reuse: Literal["all_but_output"] | int | None = None) -> int:
    """The number of leading layers ``reuse`` means for the model of ``spec`` (see the module docstring)."""
    reuse = getattr(spec, "reuse", "all_but_output") if reuse is None else reuse
    leaves = expand(spec.layers)
    if reuse == "all_but_output":
        dense = [i for i, layer in enumerate(leaves) if isinstance(layer, DenseSpec)]
        if not dense:
            raise ConfigError('model.reuse: "all_but_output" needs a model with a dense output layer')
        return dense[-1]
    if not 1 <= reuse <= len(leaves):
        raise ConfigError(
            f"model.reuse: {reuse} layers, but the model has {len(leaves)}; give 1 to {len(leaves)}"
        )
    return int(reuse)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def copy_layers(
    source: nn.Sequential, target: nn.Sequential, count: int, source_name: str = "the source"
) -> dict[str, Any]:
    """Copy the parameters and buffers of ``source``'s first ``count`` layers into ``target``'s, in place.

    Returns ``{"layers": [names], "parameters": n}`` (the layers copied and their parameter count). Raises a
    :class:`ConfigError` naming the first layer whose type or shapes differ; ``source`` is not changed.
    """
    src, tgt = list(source.named_children()), list(target.named_children())
    if count > len(src):
        raise ConfigError(
            f"model.reuse: {count} layers, but {source_name} has only {len(src)}; give model.reuse = {len(src)} "
            "or fewer"
        )
    copied, parameters = [], 0
    for i in range(count):
        (s_name, s_mod), (t_name, t_mod) = src[i], tgt[i]
        if type(s_mod) is not type(t_mod) or _shapes(s_mod) != _shapes(t_mod):
            have = ", ".join(f"{k} {list(v)}" for k, v in _shapes(s_mod).items()) or "no weights"
            want = ", ".join(f"{k} {list(v)}" for k, v in _shapes(t_mod).items()) or "no weights"
            raise ConfigError(
                f"model.from: layer {i + 1} of {source_name} ({s_name}: {type(s_mod).__name__}, {have}) does not fit "
                f"layer {i + 1} of model.layers ({t_name}: {type(t_mod).__name__}, {want}); make the first "
                f"{count} layers the same as the source's, or reuse fewer (model.reuse = {i})"
            )
        t_mod.load_state_dict(s_mod.state_dict())  # copies into target's own tensors
        copied.append(t_name)
        parameters += sum(p.numel() for p in t_mod.parameters())
    return {"layers": copied, "parameters": parameters}


def source_model(path: str | Path) -> tuple[nn.Sequential, Any]:
    """The trained model (and config) of the run folder ``path``, for ``model.from``; errors name the key."""
    from trainwell.runs import CONFIG, MODEL, RUN, load_run_config, load_run_model

    path = Path(path)
    if str(path).startswith("@"):
        raise ConfigError(
            f"model.from: {str(path)!r} names a variant of an experiment; it is resolved only by `trainwell "
            "run`; outside an experiment give the variant's run folder"
        )
    if not path.is_dir():
        raise ConfigError(f"model.from: {path}: no such run folder; give the folder of a finished run")
    if not (path / CONFIG).is_file() or not (path / RUN).is_file():
        raise ConfigError(
            f"model.from: {path} is not a run folder (no {CONFIG} / {RUN}); give a folder made by "
            "`trainwell train` or `trainwell run`"
        )
    if not (path / MODEL).is_file():
        raise ConfigError(
            f"model.from: the run {path} has not finished (no {MODEL}); finish it first with "
            f"`trainwell train --resume {path}`"
        )
    config = load_run_config(path)
    with torch.random.fork_rng(devices=[]):  # building the source must not move the new run's seeded RNG
        model = load_run_model(path, config, tuple(json.loads((path / RUN).read_text())["input_shape"]))
    return model, config


def reuse_into(spec: TransferModelSpec, model: nn.Sequential) -> dict[str, Any] | None:
    """Copy the layers ``spec.from_`` / ``spec.reuse`` ask for into ``model``; None without ``from``.

    Returns the record written to ``transfer.json``: the source folder, the layers copied and their
    parameter count.
    """
    if getattr(spec, "from_", None) is None:
        return None
    source, _ = source_model(spec.from_)
    record = copy_layers(source, model, spec.reused_count(), f"the run {spec.from_}")
    return {"method": "from", "from": str(spec.from_), "reuse": spec.reuse, **record}
