"""Recipes: the chapter's practical guidelines as complete, commented configs.

The chapter closes with a default configuration (Table 11-3), a self-normalizing alternative (Table 11-4)
and three special cases. Each is a recipe here:

- ``default``: He initialization, ELU, Batch Normalization if the net is deep, early stopping, Nadam, 1cycle
  with the learning rate found by the LR finder, standardized inputs;
- ``self-normalizing``: LeCun normal, SELU, no BN, a plain sequence of dense layers, standardized inputs;
- ``sparse``: the default with l1 regularization (sparsity breaks self-normalization, so it builds on the
  default);
- ``low-latency``: fewer layers, Leaky ReLU, BN placed where it folds into the dense layer before it, l1 for
  sparsity; after training, fold BN and lower the precision at export;
- ``risk-sensitive``: the default with MC dropout before the output, for averaged predictions and
  uncertainty estimates.

:func:`recipe_document` builds a recipe's :class:`~trainwell.guidelines.toml_text.Document`: every choice
with a one-line comment saying why, citing the guideline; :func:`render_recipe` gives its TOML text and
:func:`write_recipe` writes it, after checking that the text parses back to the same data and that the data
is a valid config (so a recipe can never write a config that does not load).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainwell.config import Config, validate_config
from trainwell.data.spec import DATASET_NAMES
from trainwell.errors import ConfigError
from trainwell.guidelines import sources
from trainwell.guidelines.facts import KNOWN_DATASETS
from trainwell.guidelines.thresholds import DEEP_NET_HIDDEN_LAYERS
from trainwell.guidelines.toml_text import Choice, Document, Item, Items, Table, document_data, plain, render
from trainwell.io import write_text
from trainwell.registry import unknown_name_message

# The exercise's net (20 hidden layers of 100 units) is the chapter's deep dense net: the recipes' default size.
DEFAULT_DEPTH = 20
DEFAULT_UNITS = 100
# "Fewer layers" for low latency: a quarter of the default depth (inference time grows with each layer).
LOW_LATENCY_DEPTH = 5
# Held out of the training set for early stopping: the exercise's 5,000 for the datasets of known size, a
# tenth of the training set for the others.
VALIDATION_COUNT = 5000
VALIDATION_FRACTION = 0.1
# The chapter's 1cycle example trains with batches of 128; 1cycle's high peak rate suits larger batches.
BATCH_SIZE = 128
EPOCHS = 30
# Early stopping: wait this many epochs for the validation loss to improve before stopping.
PATIENCE = 10
# The chapter's Leaky ReLU slope ("α = 0.2 ... seemed to result in better performance than α = 0.01").
LEAKY_ALPHA = 0.2
# The MC-dropout rate of the chapter's MC Dropout example; MC predictions average this many samples.
MC_DROPOUT_RATE = 0.2
MC_SAMPLES = 100
# The LR finder's sweep when `trainwell new` runs it: fastai's lr_find default (num_it = 100), which resolves
# the loss curve well enough and costs far less than the full epoch a run's "auto" sweeps.
FINDER_STEPS = 100
# `trainwell run --quick` on an experiment from `trainwell new`: a slice of the data for a few epochs. 5,000
# images at batch 128 are 40 steps an epoch, so 5 epochs (200 steps) outlast BN's 100-step averaging horizon
# at momentum 0.99 (a shorter run would validate with BN statistics that are still mostly their initial values).
QUICK_TRAIN = 5000
QUICK_EPOCHS = 5
# l1 strength: chosen so that the penalty starts at this share of the initial cross-entropy (ln classes), so
# that it shrinks the useless weights without overwhelming the data term.
L1_PENALTY_SHARE = 0.1


DISPLAY_NAMES = {"elu": "ELU", "leaky_relu": "Leaky ReLU"}


@dataclass(frozen=True)
class RecipeOptions:
    """What ``trainwell new`` asks: the data's shape and classes, the net's size, the dataset."""

    input_shape: tuple[int, ...]
    classes: int
    depth: int | None = None  # hidden layers; None: the recipe's own default
    units: int = DEFAULT_UNITS
    dataset: str = "cifar10"
    data_path: str | None = None
    max_lr: float | None = None  # 1cycle's peak; None: the LR finder finds it (:func:`with_found_max_lr`)
    max_lr_source: str = "given with --max-lr"  # how max_lr was chosen, for its comment

    @property
    def features(self) -> int:
        return math.prod(self.input_shape)


def options_for(
    dataset: str = "cifar10",
    *,
    input_shape: tuple[int, ...] | None = None,
    classes: int | None = None,
    depth: int | None = None,
    units: int = DEFAULT_UNITS,
    data_path: str | None = None,
    max_lr: float | None = None,
) -> RecipeOptions:
    """Checked :class:`RecipeOptions`; a known dataset fills in (and checks) the input shape and classes.

    Raises :class:`ConfigError` naming the option (``--classes``, ...) on a bad value.
    """
    if dataset not in DATASET_NAMES:
        raise ConfigError("--dataset: " + unknown_name_message("dataset", dataset, DATASET_NAMES))
    known = KNOWN_DATASETS.get(dataset)
    if known is not None:
        if input_shape is not None and tuple(input_shape) != known.input_shape:
            raise ConfigError(
                f"--input-shape: {dataset} images are {_shape_text(known.input_shape)}, not "
                f"{_shape_text(tuple(input_shape))}; leave --input-shape out for {dataset}"
            )
        if classes is not None and classes != known.classes:
            raise ConfigError(
                f"--classes: {dataset} has {known.classes} classes, not {classes}; leave --classes "
                f"out for {dataset}"
            )
        input_shape, classes = known.input_shape, known.classes
    elif data_path is None:
        raise ConfigError(f"--data-path: dataset {dataset!r} needs the path to its folder or file")
    if input_shape is None or classes is None:
        raise ConfigError(
            f"--input-shape and --classes: dataset {dataset!r} has no known shape; give both, "
            "e.g. --input-shape 32,32,3 --classes 10"
        )
    if not input_shape or any(d < 1 for d in input_shape):
        raise ConfigError(
            f"--input-shape: every dimension must be ≥ 1 (got {_shape_text(tuple(input_shape))})"
        )
    if classes < 2:
        raise ConfigError(f"--classes: a classifier needs at least 2 classes (got {classes})")
    if depth is not None and depth < 1:
        raise ConfigError(f"--depth: the number of hidden layers must be ≥ 1 (got {depth})")
    if units < 1:
        raise ConfigError(f"--units: the number of units per hidden layer must be ≥ 1 (got {units})")
    if max_lr is not None and not max_lr > 0:
        raise ConfigError(f"--max-lr: a learning rate must be > 0 (got {max_lr})")
    return RecipeOptions(tuple(input_shape), classes, depth, units, dataset, data_path, max_lr)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"32,32,3"`` → ``(32, 32, 3)``; a :class:`ConfigError` naming ``--input-shape`` otherwise."""
    try:
        return tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(
            f"--input-shape: expected integers separated by commas, e.g. 32,32,3 (got {text!r})"
        ) from None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


# -------------------------------------------------------------------------------------------- building blocks


def _data_table(o: RecipeOptions, scaling_why: str) -> Table:
    known = KNOWN_DATASETS.get(o.dataset)
    what = f"{_shape_text(o.input_shape)} inputs in {o.classes} classes"
    choices = [Choice("dataset", o.dataset, f"the data: {what}")]
    if o.data_path is not None:
        choices.append(Choice("path", o.data_path, f"where the {o.dataset} data is"))
    valid: int | float = VALIDATION_COUNT if known is not None else VALIDATION_FRACTION
    choices += [
        Choice(
            "validation_size",
            valid,
            "held out of training for early stopping, which watches the validation "
            f"loss ({sources.DEFAULT_TABLE}: early stopping)",
        ),
        Choice("scaling", "standardize", scaling_why),
    ]
    return Table("data", tuple(choices))


def _flatten(o: RecipeOptions) -> list[Item]:
    if len(o.input_shape) == 1:
        return []
    return [
        Item(
            {"type": "flatten"},
            (f"dense layers read a flat vector: {_shape_text(o.input_shape)} = {o.features:,} features",),
        )
    ]


def _output(o: RecipeOptions) -> Item:
    if o.classes == 2:
        return Item(
            {"type": "dense", "units": 1, "activation": "sigmoid"},
            (
                "output: one sigmoid unit gives the probability of the positive class; Glorot initialization "
                f"(Keras's default) suits sigmoid ({sources.INIT_TABLE})",
            ),
        )
    return Item(
        {"type": "dense", "units": o.classes, "activation": "softmax"},
        (
            f"output: softmax over the {o.classes} classes; Glorot initialization (Keras's default) suits "
            f"softmax ({sources.INIT_TABLE})",
        ),
    )


def _loss(o: RecipeOptions) -> Choice:
    if o.classes == 2:
        return Choice("loss", "binary_crossentropy", "two classes, labels 0/1, one sigmoid output")
    return Choice(
        "loss",
        "sparse_categorical_crossentropy",
        "one integer label per example, one softmax output per class",
    )


def _repeat(depth: int, units: int, layers: list[Item], why: str) -> Item:
    return Item(
        {"type": "repeat", "count": depth, "layers": Items(tuple(layers))},
        (f"{depth} hidden layers of {units} units (--depth, --units): {why}",),
    )


def _he_elu_block(
    o: RecipeOptions,
    depth: int,
    bn: bool,
    *,
    activation: dict[str, Any] | None = None,
    act_why: str = "",
    l1: float | None = None,
) -> list[Item]:
    """``depth`` hidden layers: dense (He) → [BN] → activation (ELU unless ``activation`` says otherwise)."""
    act = activation or {"type": "elu"}
    act_why = act_why or f"ELU, the default configuration's activation ({sources.DEFAULT_TABLE})"
    name = act["type"]
    he_why = f"He initialization suits {DISPLAY_NAMES[name]} ({sources.INIT_TABLE}; {sources.DEFAULT_TABLE})"
    reg = {"kernel_regularizer": {"l1": l1}} if l1 else {}
    reg_why = (
        (f"l1 drives the useless weights towards 0: a sparse model ({sources.SPARSE_CASE}; {sources.L1_L2})",)
        if l1
        else ()
    )
    if bn:
        dense = {
            "type": "dense",
            "units": o.units,
            "use_bias": False,
            "kernel_initializer": "he_normal",
            **reg,
        }
        return [
            Item(dense, (he_why, f"no bias: BN's offset β replaces it ({sources.BATCH_NORM})", *reg_why)),
            Item(
                {"type": "batch_norm"},
                (f"BN before the activation, as the BN paper's authors advise ({sources.BATCH_NORM})",),
            ),
            Item(act, (act_why,)),
        ]
    params = {k: v for k, v in act.items() if k != "type"}
    dense = {
        "type": "dense",
        "units": o.units,
        "activation": {"name": name, **params} if params else name,
        "kernel_initializer": "he_normal",
        **reg,
    }
    return [Item(dense, (act_why, he_why, *reg_why))]


def _deep(depth: int) -> bool:
    return depth >= DEEP_NET_HIDDEN_LAYERS


def _bn_why(depth: int) -> str:
    if _deep(depth):
        return (
            f"a deep net ({depth} ≥ {DEEP_NET_HIDDEN_LAYERS} hidden layers) gets Batch Normalization "
            f"({sources.DEFAULT_TABLE}: Batch Norm if deep)"
        )
    return (
        f"a shallow net ({depth} < {DEEP_NET_HIDDEN_LAYERS} hidden layers) needs no Batch Normalization "
        f"({sources.DEFAULT_TABLE}: none if shallow)"
    )


def _early_stopping(epochs: int) -> Choice:
    start = epochs // 2
    return Choice(
        "early_stopping",
        {
            "monitor": "val_loss",
            "patience": PATIENCE,
            "restore_best_weights": True,
            "start_from_epoch": start,
        },
        f"early stopping ({sources.DEFAULT_TABLE}), keeping the best epoch's weights; it starts "
        f"watching at epoch {start}, once 1cycle's rising learning rate has peaked",
    )


def _optimizer() -> Choice:
    return Choice(
        "optimizer",
        {"name": "nadam"},
        f"Nadam ({sources.DEFAULT_TABLE}: momentum optimization, or RMSProp or Nadam); its learning rate and "
        "β1 (its momentum) come from the 1cycle schedule below",
    )


def _schedule(o: RecipeOptions) -> Choice:
    if o.max_lr is None:
        raise ValueError(
            "the recipe needs max_lr: pass --max-lr or let the LR finder find it (with_found_max_lr)"
        )
    return Choice(
        "schedule",
        {"name": "one_cycle", "max_lr": o.max_lr},
        (
            "1cycle: the learning rate rises from max_lr/10 to max_lr and falls back, β1 the other way "
            f"({sources.DEFAULT_TABLE}; {sources.SCHEDULES})",
            f"max_lr: {o.max_lr_source}",
        ),
    )


# The scaling every dense-stack recipe asks for, and why.
_STANDARDIZE_WHY = (
    "standardized inputs: mean 0 and standard deviation 1 per feature "
    f"({sources.PRACTICAL_GUIDELINES}: normalize the input features)"
)


def _stack_document(
    o: RecipeOptions,
    notes: tuple[str, ...],
    layers: list[Any],
    layers_why: str,
    note: Choice,
    scaling_why: str = _STANDARDIZE_WHY,
) -> Document:
    """A recipe made of standardized data, one model table (the layers and a note on them) and the train table."""
    return Document(
        notes,
        tables=(
            _data_table(o, scaling_why),
            Table("model", (Choice("layers", Items(tuple(layers)), layers_why), note)),
            _train_table(o),
        ),
    )


def _train_table(o: RecipeOptions, extra: tuple[Choice, ...] = (), epochs: int = EPOCHS) -> Table:
    return Table(
        "train",
        (
            _loss(o),
            _optimizer(),
            _schedule(o),
            Choice("batch_size", BATCH_SIZE, "the chapter's 1cycle example trains with batches of 128"),
            Choice(
                "epochs", epochs, "an upper bound: 1cycle spans these epochs, early stopping may end sooner"
            ),
            _early_stopping(epochs),
            Choice("seed", 42, "a fixed seed makes the run repeatable"),
            *extra,
        ),
    )


def _new_args(o: RecipeOptions) -> str:
    """The ``trainwell new`` options that make ``o`` (the recipe-independent ones)."""
    args = ["--dataset", o.dataset]
    if o.data_path is not None:
        args += ["--data-path", o.data_path]
    args += ["--input-shape", ",".join(map(str, o.input_shape)), "--classes", str(o.classes)]
    if o.depth is not None:
        args += ["--depth", str(o.depth)]
    args += ["--units", str(o.units)]
    return shlex.join(args)


def _header(recipe: Recipe, o: RecipeOptions, file: str, lines: tuple[str, ...]) -> tuple[str, ...]:
    file = shlex.quote(file)
    return (
        f'trainwell recipe "{recipe.name}": {recipe.summary}.',
        f"From {sources.cite(recipe.source)}.",
        *lines,
        "Every choice below has a comment saying why.",
        f"Train it:  trainwell train {file}",
        f"Check a changed copy against the guidelines:  trainwell advise {file}",
        f"Written by:  trainwell new {file} --recipe {recipe.name} {_new_args(o)}",
    )


def _l1_factor(o: RecipeOptions, depth: int) -> float:
    """The l1 factor whose penalty starts at :data:`L1_PENALTY_SHARE` of the initial loss ``ln(classes)``.

    At He initialization a kernel of fan-in ``n`` and fan-out ``m`` has ``n·m`` weights of standard deviation
    ``sqrt(2/n)``, so ``E Σ|w| ≈ n·m·sqrt(2/n)·sqrt(2/π)`` (the mean absolute value of a normal is
    ``σ·sqrt(2/π)``; the truncation at 2σ changes it by a few percent). Rounded to one significant figure.
    """
    fans = [o.features] + [o.units] * (depth - 1)
    expected = sum(n * o.units * math.sqrt(2.0 / n) * math.sqrt(2.0 / math.pi) for n in fans)
    factor = L1_PENALTY_SHARE * math.log(o.classes) / expected
    return float(f"{factor:.0e}")


# ------------------------------------------------------------------------------------------------- recipes


def _default(o: RecipeOptions) -> Document:
    depth = o.depth or DEFAULT_DEPTH
    layers = [
        *_flatten(o),
        _repeat(depth, o.units, _he_elu_block(o, depth, _deep(depth)), _bn_why(depth)),
        _output(o),
    ]
    l2_note = Choice(
        None,
        None,
        "not chosen: ℓ2 regularization; if early stopping alone still overfits, add "
        "kernel_regularizer = { l2 = 1e-4 } to the hidden dense layers "
        f"({sources.DEFAULT_TABLE}: early stopping, + ℓ2 reg. if needed)",
    )
    return _stack_document(
        o,
        (),
        layers,
        "a plain stack of dense layers",
        l2_note,
        scaling_why="standardized inputs: mean 0 and standard deviation 1 per feature, fitted on the "
        f"training split ({sources.PRACTICAL_GUIDELINES}: normalize the input features)",
    )


def _self_normalizing(o: RecipeOptions) -> Document:
    depth = o.depth or DEFAULT_DEPTH
    dense = {"type": "dense", "units": o.units, "activation": "selu", "kernel_initializer": "lecun_normal"}
    block = [
        Item(
            dense,
            (
                f"SELU: the net normalizes itself, no Batch Normalization ({sources.SELF_NORMALIZING_TABLE})",
                f"LeCun normal initialization, which self-normalization needs ({sources.SELU_CONDITIONS})",
            ),
        )
    ]
    layers = [
        *_flatten(o),
        _repeat(
            depth,
            o.units,
            block,
            "a plain sequence of dense layers, the architecture "
            f"self-normalization needs ({sources.SELU_CONDITIONS})",
        ),
        _output(o),
    ]
    dropout_note = Choice(
        None,
        None,
        "not chosen: alpha dropout; if the net overfits, add { type = "
        '"alpha_dropout", rate = 0.1 } before the output layer, never plain dropout, ℓ1/ℓ2, '
        f"max-norm or BN, which break self-normalization ({sources.SELF_NORMALIZING_TABLE})",
    )
    return _stack_document(
        o,
        (),
        layers,
        "dense layers only",
        dropout_note,
        scaling_why="standardized inputs (mean 0, standard deviation 1): SELU self-normalizes only from "
        f"inputs that start there ({sources.SELU_CONDITIONS})",
    )


def _sparse(o: RecipeOptions) -> Document:
    depth = o.depth or DEFAULT_DEPTH
    l1 = _l1_factor(o, depth)
    layers = [
        *_flatten(o),
        _repeat(depth, o.units, _he_elu_block(o, depth, _deep(depth), l1=l1), _bn_why(depth)),
        _output(o),
    ]
    after = (
        "after training, zero out the tiny weights and fine-tune: `trainwell prune RUN --sparsity 0.9 "
        f"--finetune 2` ({sources.SPARSE_CASE})"
    )
    return _stack_document(
        o,
        (
            "Sparsity breaks self-normalization, so this builds on the default configuration, not on SELU.",
            f"l1 = {l1:g}: the penalty starts at about {L1_PENALTY_SHARE:.0%} of the initial loss (ln {o.classes}).",
        ),
        layers,
        "the default configuration's stack, with l1 on the hidden kernels",
        Choice(None, None, after),
    )


def _low_latency(o: RecipeOptions) -> Document:
    depth = o.depth or LOW_LATENCY_DEPTH
    l1 = _l1_factor(o, depth)
    act = {"type": "leaky_relu", "alpha": LEAKY_ALPHA}
    act_why = (
        f"Leaky ReLU (α = {LEAKY_ALPHA}), faster to compute than ELU ({sources.LOW_LATENCY_CASE}; "
        f"{sources.ACTIVATIONS})"
    )
    block = _he_elu_block(o, depth, True, activation=act, act_why=act_why, l1=l1)
    block[1] = Item(
        {"type": "batch_norm"},
        (
            "BN right after the dense layer, so it folds into that layer after "
            f"training and costs nothing at inference ({sources.LOW_LATENCY_CASE})",
        ),
    )
    layers = [
        *_flatten(o),
        _repeat(depth, o.units, block, f"fewer layers for fast predictions ({sources.LOW_LATENCY_CASE})"),
        _output(o),
    ]
    after = (
        "after training: `trainwell fuse RUN` folds BN into the dense layers, `trainwell export RUN "
        f"--precision float16` (or int8) lowers the precision ({sources.LOW_LATENCY_CASE})"
    )
    return _stack_document(
        o,
        (
            f"l1 = {l1:g} makes the model sparse, which also speeds it up; "
            f"the penalty starts at about {L1_PENALTY_SHARE:.0%} of the initial loss.",
        ),
        layers,
        "a small stack of dense layers",
        Choice(None, None, after),
    )


def _risk_sensitive(o: RecipeOptions) -> Document:
    depth = o.depth or DEFAULT_DEPTH
    dropout = Item(
        {"type": "dropout", "rate": MC_DROPOUT_RATE, "mc": True},
        (
            f"MC dropout: stays active at prediction, so averaging {MC_SAMPLES} predictions gives better "
            f"probabilities and an uncertainty estimate ({sources.MC_DROPOUT}); after the last hidden "
            "layer, so no BN ever sees dropped units",
        ),
    )
    layers = [
        *_flatten(o),
        _repeat(depth, o.units, _he_elu_block(o, depth, _deep(depth)), _bn_why(depth)),
        dropout,
        _output(o),
    ]
    after = (
        f"predict with MC dropout: `trainwell predict RUN --mc {MC_SAMPLES}` averages {MC_SAMPLES} samples (BN "
        "stays in inference mode) and reports, beside the ordinary prediction, accuracy, log loss (how well the "
        f"probabilities are calibrated: lower is better) and predictive entropy ({sources.RISK_SENSITIVE_CASE})"
    )
    return _stack_document(
        o,
        (),
        layers,
        "the default configuration's stack, with MC dropout before the output",
        Choice(None, None, after),
    )


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line, for `trainwell recipes`
    source: str  # where in the chapter it comes from
    default_depth: int
    build: Callable[[RecipeOptions], Document]


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "default",
            "He init, ELU, BN if deep, early stopping, Nadam, 1cycle with the LR finder, standardized inputs",
            sources.DEFAULT_TABLE,
            DEFAULT_DEPTH,
            _default,
        ),
        Recipe(
            "self-normalizing",
            "LeCun normal, SELU, no BN, plain dense stack, standardized inputs, 1cycle",
            sources.SELF_NORMALIZING_TABLE,
            DEFAULT_DEPTH,
            _self_normalizing,
        ),
        Recipe(
            "sparse",
            "the default configuration with l1 on the hidden kernels (sparsity breaks SELU)",
            sources.SPARSE_CASE,
            DEFAULT_DEPTH,
            _sparse,
        ),
        Recipe(
            "low-latency",
            "fewer layers, Leaky ReLU, foldable BN, l1 sparsity; fold BN and lower precision after",
            sources.LOW_LATENCY_CASE,
            LOW_LATENCY_DEPTH,
            _low_latency,
        ),
        Recipe(
            "risk-sensitive",
            "the default configuration with MC dropout for averaged, uncertainty-aware predictions",
            sources.RISK_SENSITIVE_CASE,
            DEFAULT_DEPTH,
            _risk_sensitive,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError("--recipe: " + unknown_name_message("recipe", name, list(RECIPES)))
    return RECIPES[name]


def recipe_document(name: str, options: RecipeOptions, file: str = "CONFIG.toml") -> Document:
    """The commented document of recipe ``name`` for ``options``; ``file`` is the name its header uses."""
    recipe = get_recipe(name)
    if options.depth is None:
        options = replace(options, depth=recipe.default_depth)
    document = recipe.build(options)
    return replace(document, header=_header(recipe, options, file, document.header))


def render_recipe(name: str, options: RecipeOptions, file: str = "CONFIG.toml") -> tuple[str, Config]:
    """The TOML text of recipe ``name`` and the config it validates to.

    The text is parsed back and must give the document's data exactly, and the data must validate: either
    failing is a bug in the recipe (a RuntimeError), and nothing is written.
    """
    document = recipe_document(name, options, file)
    text = render(document)
    data = document_data(document)
    if tomllib.loads(text) != data:
        raise RuntimeError(f"recipe {name!r}: the written TOML does not parse back to the recipe's data")
    try:
        config = validate_config(data, source=f"recipe {name!r}")
    except ConfigError as e:
        raise RuntimeError(f"recipe {name!r} builds an invalid config (a bug in the recipe): {e}") from None
    return text, config


def with_found_max_lr(name: str, options: RecipeOptions, dataset: Any = None) -> RecipeOptions:
    """``options`` with 1cycle's ``max_lr`` set to the LR finder's suggestion for the recipe's own net and data.

    The finder (:func:`trainwell.train.lr_finder.find_lr_for_config`, what ``trainwell lr-find`` runs) sweeps
    the recipe's optimizer over at most one epoch of the recipe's data, starting from the model a run of the
    config starts from, and suggests the LR of the lowest smoothed loss divided by 10 (the chapter's rule); the
    chapter's 1cycle takes that LR as its peak. ``dataset`` defaults to loading the recipe's data.
    """
    from trainwell.train.lr_finder import find_lr_for_config

    # The sweep ignores the schedule, so any max_lr makes a config to sweep with.
    data = document_data(recipe_document(name, replace(options, max_lr=1.0)))
    data["train"]["lr_finder"] = {"steps": FINDER_STEPS}
    config = validate_config(data, source=f"recipe {name!r}")
    result = find_lr_for_config(config, dataset)
    max_lr = float(f"{result.suggested_lr:.2g}")
    source = (
        f"the LR finder's suggestion for this net and data ({len(result.lrs)}-step sweep, lowest smoothed loss "
        f"at {result.min_loss_lr:.2g}, ÷ {config.train.lr_finder.divisor:g}; {sources.SCHEDULES}); after "
        "changing the net, run `trainwell lr-find` again"
    )
    return replace(options, max_lr=max_lr, max_lr_source=source)


def _write_new(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path``, complete or not at all; an existing file only with ``force``.

    The text goes to a temporary file beside ``path``, which is then linked into place (failing if the name
    exists, so that a file that appears meanwhile is not overwritten either) or, with ``force``, renamed over
    it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if force:
        write_text(path, text)
        return
    tmp = path.with_name(f".{path.name}.new")
    write_text(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(
            f"{path}: the file exists; choose another name, or pass --force to overwrite it"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _check_new_path(path: Path, force: bool) -> None:
    if path.suffix != ".toml":
        raise ConfigError(f"{path}: a config file name ends in .toml")
    if path.exists() and not force:
        raise ConfigError(f"{path}: the file exists; choose another name, or pass --force to overwrite it")


def write_recipe(path: str | Path, name: str, options: RecipeOptions, *, force: bool = False) -> Config:
    """Write recipe ``name`` to ``path`` and return its config; an existing file only with ``force``.

    Without ``options.max_lr`` the LR finder finds it first (:func:`with_found_max_lr`: reads the data).
    """
    path = Path(path)
    _check_new_path(path, force)
    if options.max_lr is None:
        options = with_found_max_lr(name, options)
    text, config = render_recipe(name, options, path.name)
    _write_new(path, text, force)
    return config


# --------------------------------------------------------------------------------------------- experiments


def _first_line(why: str | tuple[str, ...]) -> str:
    return why if isinstance(why, str) else why[0]


def _variant(recipe: Recipe, document: Document, base: dict[str, Any], first: str) -> Table:
    """The ``[[variants]]`` entry of one recipe: what its config changes from ``[base]`` (the first recipe)."""
    data = document_data(document)
    changes: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    whys: list[str] = []
    for table in document.tables:
        for choice in table.choices:
            if choice.key is None or plain(choice.value) == base[table.name].get(choice.key):
                continue
            changes.setdefault(table.name, {})[choice.key] = choice.value
            changed.append(f"{table.name}.{choice.key}")
            if not isinstance(choice.value, Items):  # a layer list carries its own comments
                whys += [choice.why] if isinstance(choice.why, str) else list(choice.why)
    unset = [f"{t}.{k}" for t in base for k in base[t] if k not in data[t]]
    choices = [
        Choice("name", recipe.name, "the variant's run folder"),
        Choice("description", f"{recipe.name}: {recipe.summary}.", f"from {sources.cite(recipe.source)}"),
    ]
    if changes:
        why = (
            f"what the {recipe.name} recipe changes from [base] (the {first} recipe): {', '.join(changed)}",
        )
        choices.append(Choice("set", changes, why + tuple(whys)))
    if unset:
        choices.append(Choice("unset", unset, f"what the {recipe.name} recipe leaves out of [base]"))
    if recipe.name == "risk-sensitive":
        choices.append(
            Choice(
                "mc_dropout",
                MC_SAMPLES,
                f"after training, the MC-dropout prediction ({MC_SAMPLES} "
                f"samples) is reported beside the ordinary one ({sources.MC_DROPOUT})",
            )
        )
    return Table("variants", tuple(choices), array=True)


def experiment_name(file: str) -> str:
    """The experiment's name (its folder under ``experiments/``) from the file name: its stem, with every
    character a folder name should not hold replaced by ``-``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(file).stem).lstrip("._-")
    return stem or "recipes"


def experiment_document(recipes: dict[str, RecipeOptions], file: str = "STUDY.toml") -> Document:
    """An experiment file (``trainwell run``) comparing ``recipes`` (name → options, in order).

    ``[base]`` is the first recipe's config, with its comments; every recipe is a variant whose ``set`` holds
    what its config changes from the base. ``[quick]`` scales the study down for ``trainwell run --quick``.
    """
    if not recipes:
        raise ValueError("an experiment needs at least one recipe")
    documents = {name: recipe_document(name, options, file) for name, options in recipes.items()}
    first, base_doc = next(iter(documents.items()))
    base = document_data(base_doc)
    options = recipes[first]
    name = experiment_name(file)
    names = list(recipes)
    args = " ".join(f"--recipe {n}" for n in names)
    quoted = shlex.quote(file)
    header = (
        f"trainwell experiment: the chapter's recipes side by side ({', '.join(names)}).",
        f'[base] is the "{first}" recipe; each [[variants]] entry is one recipe (`trainwell recipes` lists them).',
        "Every choice below has a comment saying why.",
        f"Run it:  trainwell run {quoted} --quick   (a slice of the data, a few epochs; without --quick, the full "
        "study)",
        f"Then read experiments/{name}-quick/report.html (or experiments/{name}/ for the full study).",
        f"Written by:  trainwell new {quoted} {args} {_new_args(options)}",
    )
    quick = Table(
        "quick",
        (
            Choice(
                "data",
                {"limit_train": QUICK_TRAIN},
                f"--quick: {QUICK_TRAIN:,} training images (validation stays)",
            ),
            Choice(
                "train",
                {"epochs": QUICK_EPOCHS},
                f"--quick: {QUICK_EPOCHS} epochs of {math.ceil(QUICK_TRAIN / BATCH_SIZE)} "
                "steps, longer than BN's 100-step averaging horizon",
            ),
        ),
    )
    top = (
        Choice("name", name, f"the experiment folder: experiments/{name}[-quick]/"),
        Choice(
            "description",
            f"The chapter's recipes compared on {options.dataset}: {', '.join(names)}.",
            "the report's opening line",
        ),
    )
    tables = (
        *(replace(t, name=f"base.{t.name}") for t in base_doc.tables),
        quick,
        *(_variant(RECIPES[n], documents[n], base, first) for n in names),
    )
    return Document(header, top, tables)


def render_experiment(recipes: dict[str, RecipeOptions], file: str = "STUDY.toml") -> tuple[str, Any]:
    """The TOML text of :func:`experiment_document` and the :class:`~trainwell.experiments.spec.Experiment`
    it loads as; every variant's config is validated, full and quick (a failure is a bug: RuntimeError)."""
    from trainwell.experiments.spec import parse_experiment, plan_runs

    document = experiment_document(recipes, file)
    text = render(document)
    if tomllib.loads(text) != document_data(document):
        raise RuntimeError("the written experiment TOML does not parse back to its data")
    try:
        experiment = parse_experiment(text, file)
        plan_runs(experiment)
        plan_runs(experiment, quick=True)
    except ConfigError as e:
        raise RuntimeError(f"the recipes' experiment is invalid (a bug in the recipes): {e}") from None
    return text, experiment


def write_experiment(
    path: str | Path, names: list[str], options: RecipeOptions, *, force: bool = False
) -> Any:
    """Write an experiment file comparing recipes ``names`` to ``path`` (see :func:`experiment_document`).

    Without ``options.max_lr`` the LR finder finds each recipe's own (:func:`with_found_max_lr`).
    """
    path = Path(path)
    _check_new_path(path, force)
    if len(set(names)) != len(names):
        raise ConfigError(f"--recipe: each recipe once, please (got {', '.join(names)})")
    for name in names:
        get_recipe(name)
    dataset = None
    if options.max_lr is None:
        from trainwell.data import load_dataset

        # Every recipe writes the same [data] table, so the finder's sweeps share one load of the data.
        dataset = load_dataset(render_recipe(names[0], replace(options, max_lr=1.0))[1].data)
    per_recipe = {
        name: options if options.max_lr is not None else with_found_max_lr(name, options, dataset)
        for name in names
    }
    text, experiment = render_experiment(per_recipe, path.name)
    _write_new(path, text, force)
    return experiment
