"""Layer lists for the studies, as plain config data: the base net with its hidden layers changed, or a
deep stack of one activation with the initializer Table 11-1 pairs with it.

Pure functions of ``model.layers`` data (lists of dicts): nothing is built here.
"""

from __future__ import annotations

import copy
from typing import Any

from trainwell.guidelines.advisor import GLOROT_ACTIVATIONS, HE_ACTIVATIONS

Layers = list[dict[str, Any]]


def flat_layers(layers: Layers) -> Layers:
    """``layers`` with every ``repeat`` unrolled (a deep copy), so each layer can be changed on its own."""
    out: Layers = []
    for layer in layers:
        if layer.get("type") == "repeat":
            for _ in range(int(layer["count"])):
                out += flat_layers(layer["layers"])
        else:
            out.append(copy.deepcopy(layer))
    return out


def dense_indices(layers: Layers) -> list[int]:
    """Where the dense layers of the flat list ``layers`` are, bottom to top."""
    return [i for i, layer in enumerate(layers) if layer.get("type") == "dense"]


def hidden_dense_indices(layers: Layers) -> list[int]:
    """Where the hidden dense layers (every dense layer but the last, the output) of ``layers`` are."""
    return dense_indices(layers)[:-1]


def output_layer(layers: Layers) -> dict[str, Any]:
    """The output layer: the last dense layer."""
    dense = dense_indices(flat_layers(layers))
    if not dense:
        raise ValueError("the model has no dense layer, so no output layer to keep")
    return flat_layers(layers)[dense[-1]]


def change_hidden(layers: Layers, **changes: Any) -> Layers:
    """``layers`` unrolled, with ``changes`` set on every hidden dense layer (e.g. ``units=1``)."""
    flat = flat_layers(layers)
    for i in hidden_dense_indices(flat):
        flat[i].update(copy.deepcopy(changes))
    return flat


def initializer_for(activation: str) -> str:
    """The initializer the chapter's Table 11-1 pairs with ``activation``: LeCun for SELU, He for the ReLU
    family and ELU, Glorot for none, tanh, logistic and softmax."""
    if activation == "selu":
        return "lecun_normal"
    if activation in HE_ACTIVATIONS:
        return "he_normal"
    if activation in GLOROT_ACTIVATIONS:
        return "glorot_uniform"
    raise ValueError(f"Table 11-1 pairs no initializer with the activation {activation!r}")


def activation_table(activation: str | dict[str, Any]) -> dict[str, Any]:
    """``"elu"`` or ``{ name = "leaky_relu", alpha = 0.2 }`` as a table."""
    return {"name": activation} if isinstance(activation, str) else dict(activation)


def deep_stack(
    depth: int,
    units: int,
    activation: str | dict[str, Any],
    output: dict[str, Any],
    *,
    initializer: str | None = None,
    dropout: float | None = None,
) -> Layers:
    """``flatten``, ``depth`` dense layers of ``units`` units with ``activation`` (and the initializer of
    Table 11-1 unless ``initializer`` is given), each followed by dropout at rate ``dropout`` when given,
    then ``output`` (the base net's output layer)."""
    if depth < 1 or units < 1:
        raise ValueError(f"a stack needs depth ≥ 1 and units ≥ 1, got depth={depth}, units={units}")
    act = activation_table(activation)
    hidden: dict[str, Any] = {
        "type": "dense",
        "units": units,
        "activation": act,
        "kernel_initializer": initializer or initializer_for(act["name"]),
    }
    block: Layers = [hidden] + ([{"type": "dropout", "rate": dropout}] if dropout else [])
    return [{"type": "flatten"}, {"type": "repeat", "count": depth, "layers": block}, copy.deepcopy(output)]
