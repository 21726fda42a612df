"""Self-normalizing networks: the conditions under which a SELU net keeps its activations normalized.

Klambauer et al. (2017, "Self-Normalizing Neural Networks") show that with SELU activations, a layer whose
inputs have mean 0 and variance 1 and whose weights have mean 0 and variance 1/fan_in gives outputs of mean 0
and variance 1 again, and that this fixed point attracts: a deep stack of such layers normalizes itself,
with no Batch Normalization. The chapter lists what it takes, and what breaks it:

1. the inputs are standardized (``data.scaling = "standardize"``);
2. every hidden layer's kernel is LeCun normal (``kernel_initializer = "lecun_normal"``, or a
   ``variance_scaling`` with ``scale = 1``, ``mode = "fan_in"`` and a normal distribution);
3. the net is a plain sequence of dense layers with SELU activations (trainwell's models are always
   sequential, so no skip connection can break this); the only other layers that keep the fixed point are
   ``alpha_dropout`` (built to keep mean and variance) and ``flatten`` (a reshape);
4. no Batch Normalization, plain dropout, l1/l2 regularization or max-norm constraint.

:func:`self_normalization_problems` checks a model against these conditions and returns one
:class:`Problem` per broken condition, each with its key path, the reason and the fix; it is a pure function
of the specs. :func:`warn_if_not_self_normalizing` prints them as warnings (``trainwell train`` and
``trainwell summary`` call it); ``model.check_self_normalization = false`` silences it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from trainwell.nn.build import ModelSpec
from trainwell.nn.layers import (
    ActivationLayerSpec,
    BatchNormSpec,
    DenseSpec,
    DropoutSpec,
    RepeatSpec,
)
from trainwell.spec import Spec

if TYPE_CHECKING:
    from trainwell.config import Config

OPT_OUT = "model.check_self_normalization = false"


@dataclass(frozen=True)
class Problem:
    """One broken condition of self-normalization: where in the config, why it matters, how to fix it."""

    where: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}; {self.fix}"


def _leaves(layers: list, prefix: str) -> Iterator[tuple[str, Spec]]:
    """``(key path, spec)`` of every layer in model order, with ``repeat`` unrolled (a repeated layer keeps the
    path of the one spec it comes from)."""
    for i, layer in enumerate(layers):
        path = f"{prefix}[{i}]"
        if isinstance(layer, RepeatSpec):
            for _ in range(layer.count):
                yield from _leaves(layer.layers, f"{path}.layers")
        else:
            yield path, layer


def _is_lecun_normal(init: Spec) -> bool:
    if init.name == "lecun_normal":
        return True
    return (
        init.name == "variance_scaling"
        and init.scale == 1.0
        and init.mode == "fan_in"
        and init.distribution in ("truncated_normal", "untruncated_normal")
    )


def uses_selu(model: ModelSpec) -> bool:
    """Whether any layer of ``model`` applies SELU."""
    return any(
        isinstance(layer, DenseSpec | ActivationLayerSpec) and layer.activation.name == "selu"
        for _, layer in _leaves(model.layers, "model.layers")
    )


def self_normalization_problems(model: ModelSpec, scaling: str | None = None) -> list[Problem]:
    """The broken conditions of self-normalization of a ``model`` that uses SELU (none when it does not).

    ``scaling`` is the config's ``data.scaling``; ``None`` skips the input check (data not known). Each
    problem is reported once per layer spec, however often a ``repeat`` unrolls it. The last dense layer is
    the output layer: its initializer and activation are free.
    """
    if not uses_selu(model):
        return []
    found: dict[tuple[str, str], Problem] = {}

    def add(where: str, reason: str, fix: str) -> None:
        found.setdefault((where, reason), Problem(where, reason, fix))

    if scaling is not None and scaling != "standardize":
        add(
            "data.scaling",
            f'the inputs are scaled "{scaling}", not standardized, but SELU keeps activations '
            "at mean 0 and variance 1 only from inputs that start there",
            'set data.scaling = "standardize"',
        )
    leaves = list(_leaves(model.layers, "model.layers"))
    dense_at = [i for i, (_, layer) in enumerate(leaves) if isinstance(layer, DenseSpec)]
    output = dense_at[-1] if dense_at else None
    for i, (path, layer) in enumerate(leaves):
        if isinstance(layer, BatchNormSpec):
            add(
                path,
                "Batch Normalization breaks self-normalization (SELU normalizes by itself)",
                "remove this batch_norm layer",
            )
        elif isinstance(layer, DropoutSpec) and layer.type == "dropout":
            add(
                path,
                "plain dropout changes the mean and variance that SELU keeps at 0 and 1",
                f'use alpha dropout: {{ type = "alpha_dropout", rate = {layer.rate} }}',
            )
        elif isinstance(layer, ActivationLayerSpec) and layer.activation.name not in ("selu", "linear"):
            add(
                path,
                f'activation "{layer.activation.name}" is not SELU, and only SELU layers self-normalize',
                'use { type = "selu" } or remove this layer',
            )
        elif isinstance(layer, DenseSpec):
            reg = layer.kernel_regularizer
            if reg is not None and (reg.l1 or reg.l2):
                add(
                    f"{path}.kernel_regularizer",
                    "l1/l2 regularization pulls the weights away from the variance "
                    "1/fan_in that self-normalization needs",
                    "remove it (regularize with alpha_dropout instead)",
                )
            if layer.kernel_constraint is not None:
                add(
                    f"{path}.kernel_constraint",
                    "a max-norm constraint rescales the weights away from the "
                    "variance 1/fan_in that self-normalization needs",
                    "remove it (regularize with alpha_dropout instead)",
                )
            if i == output:
                continue
            if not _is_lecun_normal(layer.kernel_initializer):
                add(
                    f"{path}.kernel_initializer",
                    f'"{layer.kernel_initializer.name}" is not LeCun normal, and '
                    "SELU keeps mean 0 and variance 1 only with weights of variance 1/fan_in",
                    'set kernel_initializer = "lecun_normal"',
                )
            follows = leaves[i + 1][1] if i + 1 < len(leaves) else None
            selu_next = isinstance(follows, ActivationLayerSpec) and follows.activation.name == "selu"
            act = layer.activation.name
            if act != "selu" and not (act == "linear" and selu_next):
                add(
                    f"{path}.activation",
                    f'hidden activation "{act}" is not SELU, and only SELU layers self-normalize',
                    'set activation = "selu"',
                )
    return list(found.values())


def check_config(config: Config) -> list[Problem]:
    """:func:`self_normalization_problems` of a whole config, or none when it opts out
    (``model.check_self_normalization = false``)."""
    if not config.model.check_self_normalization:
        return []
    return self_normalization_problems(config.model, config.data.scaling)


def warn_if_not_self_normalizing(config: Config, console: Console | None = None) -> list[Problem]:
    """Print :func:`check_config`'s problems as one warning on stderr (or ``console``); return them."""
    problems = check_config(config)
    if problems:
        console = console or Console(stderr=True, highlight=False)
        lines = [
            f"[bold yellow]warning:[/] this SELU net is not self-normalizing ({len(problems)} "
            f"problem{'s' if len(problems) > 1 else ''}; set {OPT_OUT} to silence this):"
        ]
        lines += [f"  - {escape(str(p))}" for p in problems]
        console.print("\n".join(lines), soft_wrap=True)
    return problems
