"""What the guidelines read off a validated config beyond its plain values.

- the model's layers in the order they run (repeats unrolled), each with the key path the user wrote it at
  (``model.layers[1].layers[0]``; the copies of a repeat share their path, so advice names it once);
- its hidden layers: every dense layer but the last, with the activation that follows it (its own, or an
  activation layer after it when the dense layer is linear, as in the "BN before the activation" pattern);
- the kind of each kernel initializer (He, Glorot, LeCun: Table 11-1's families);
- the number of training examples an epoch sees, where the config alone determines it.

Pure functions of the specs: nothing is built, nothing is read from disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from trainwell.config import Config
from trainwell.data import cifar10, fashion_mnist
from trainwell.data.spec import DataSpec
from trainwell.errors import ConfigError
from trainwell.nn.build import ModelSpec
from trainwell.nn.initializers import VARIANCE_SCALING_PRESETS
from trainwell.nn.layers import (
    ActivationLayerSpec,
    BatchNormSpec,
    DenseSpec,
    DropoutSpec,
    LeafLayerSpec,
    RepeatSpec,
)


@dataclass(frozen=True)
class KnownDataset:
    """What a config implies about a dataset without reading it."""

    input_shape: tuple[int, ...]
    classes: int
    training_examples: int  # before the validation split


KNOWN_DATASETS: dict[str, KnownDataset] = {
    "cifar10": KnownDataset((32, 32, 3), len(cifar10.CLASSES), 50_000),
    "fashion_mnist": KnownDataset((28, 28), len(fashion_mnist.CLASSES), 60_000),
}


@dataclass(frozen=True)
class Leaf:
    """One layer as it runs: its spec and the key path where the config writes it."""

    path: str
    spec: LeafLayerSpec


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden dense layer and what follows it up to the next dense layer."""

    dense: Leaf
    activation: str  # the effective activation's name ("linear" when there is none)
    activation_path: str  # where that activation is set
    after: tuple[Leaf, ...]  # the layers between this dense layer and the next one


@dataclass(frozen=True)
class ModelFacts:
    leaves: tuple[Leaf, ...]
    hidden: tuple[HiddenLayer, ...]
    output: Leaf | None  # the last dense layer

    @property
    def depth(self) -> int:
        """The number of hidden dense layers."""
        return len(self.hidden)

    @property
    def batch_norms(self) -> tuple[Leaf, ...]:
        return tuple(leaf for leaf in self.leaves if isinstance(leaf.spec, BatchNormSpec))

    @property
    def hidden_activations(self) -> set[str]:
        return {h.activation for h in self.hidden}


def leaves_with_paths(layers: list, prefix: str = "model.layers") -> list[Leaf]:
    """The layers in the order they run, repeats unrolled, each with its key path in the config."""
    out: list[Leaf] = []
    for i, layer in enumerate(layers):
        path = f"{prefix}[{i}]"
        if isinstance(layer, RepeatSpec):
            for _ in range(layer.count):
                out.extend(leaves_with_paths(layer.layers, f"{path}.layers"))
        else:
            out.append(Leaf(path, layer))
    return out


def model_facts(model: ModelSpec) -> ModelFacts:
    """The :class:`ModelFacts` of a validated ``[model]`` table."""
    leaves = leaves_with_paths(model.layers)
    dense_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf.spec, DenseSpec)]
    hidden = []
    for k, i in enumerate(dense_at[:-1]):
        after = tuple(leaves[i + 1 : dense_at[k + 1]])
        dense = leaves[i]
        name, where = dense.spec.activation.name, f"{dense.path}.activation"
        if name == "linear":
            layer = next((a for a in after if isinstance(a.spec, ActivationLayerSpec)), None)
            if layer is not None:
                name, where = layer.spec.activation.name, layer.path
        hidden.append(HiddenLayer(dense, name, where, after))
    output = leaves[dense_at[-1]] if dense_at else None
    return ModelFacts(tuple(leaves), tuple(hidden), output)


InitFamily = Literal["he", "glorot", "lecun", "other"]


def initializer_family(spec: object) -> InitFamily:
    """Which of Table 11-1's families a kernel initializer belongs to, by its variance ``scale / fan``.

    The presets by name; a ``variance_scaling`` by its ``scale`` and ``mode`` (its distribution does not
    change the variance). Anything else (fixed-scale random, orthogonal, constants) is ``"other"``.
    """
    name = getattr(spec, "name", None)
    if name in VARIANCE_SCALING_PRESETS:
        return name.split("_")[0]  # type: ignore[return-value]
    if name == "variance_scaling":
        scale, mode = spec.scale, spec.mode  # type: ignore[attr-defined]
        for family, (s, m, _) in (
            ("he", VARIANCE_SCALING_PRESETS["he_normal"]),
            ("glorot", VARIANCE_SCALING_PRESETS["glorot_normal"]),
            ("lecun", VARIANCE_SCALING_PRESETS["lecun_normal"]),
        ):
            if math.isclose(scale, s) and mode == m:
                return family  # type: ignore[return-value]
    return "other"


def training_examples(data: DataSpec) -> int | None:
    """How many examples one training epoch sees, or an upper bound of it, or None when unknown.

    Exact for the datasets of :data:`KNOWN_DATASETS` (their size, less the validation split, at most
    ``limit_train``); for the others ``limit_train`` is an upper bound and without it nothing is known.
    """
    from trainwell.data.preprocessing import validation_count

    known = KNOWN_DATASETS.get(data.dataset)
    if known is None:
        return data.limit_train
    try:
        n = known.training_examples - validation_count(data.validation_size, known.training_examples)
    except ConfigError:
        return 0  # the validation split takes everything: loading the data will say so
    return min(n, data.limit_train) if data.limit_train is not None else n


def steps_per_epoch(config: Config) -> int | None:
    """Optimizer steps in one epoch (the loop's last batch may be short), or an upper bound, or None."""
    n = training_examples(config.data)
    return None if n is None else math.ceil(n / config.train.batch_size)


def is_dropout(leaf: Leaf, kind: str | None = None) -> bool:
    """Whether ``leaf`` is a dropout layer (of ``kind``, ``"dropout"`` or ``"alpha_dropout"``, if given)."""
    return isinstance(leaf.spec, DropoutSpec) and (kind is None or leaf.spec.type == kind)
