"""Splitting and scaling: from the stored train/test arrays to float32 train/valid/test splits.

In order, with one generator ``numpy.random.default_rng(seed)``:

0. ``classes`` keeps only the examples of the listed classes (train and test), relabelled 0, 1, ... in the
   listed order; ``positive_class`` then relabels to 1 for that class and 0 for the others. Everything below
   counts the kept examples only.
1. The training set is shuffled once. The first ``validation_size`` examples of that order are the
   validation split (a float is a fraction of the training set, rounded to the nearest count), the rest the
   training split. The shuffle is applied even with no validation split, so that ``limit_train`` takes a
   random, not a class-sorted, subset (image folders are stored class by class).
2. ``limit_train`` keeps the first ``limit_train`` examples of the training split (the validation split is
   untouched); ``limit_test`` keeps a random ``limit_test`` of the test set, in stored order.
3. Scaling: ``"unit"`` is ``x / 255``; ``"standardize"`` is ``(x - mean) / std`` per feature (each
   ``(h, w, c)`` position), with mean and std fitted on the training split after the limit, in raw pixel
   units, and applied to every split; ``"none"`` keeps the values. A feature that is constant on the training
   split (std exactly 0, e.g. a border pixel that is always black) gets std 1, so it becomes ``x - mean``
   rather than a division by zero.

Memory: each split is gathered once from the stored (usually uint8) array and converted once to float32;
scaling then works in place. Statistics are accumulated in float64 over blocks of rows, never over a float64
copy of the whole training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from trainwell.data.dataset import Dataset, RawDataset, ScalingStats
from trainwell.data.spec import DataSpec
from trainwell.errors import ConfigError

_ROWS_PER_BLOCK = 2048  # rows per float64 block when fitting statistics: ~50 MB for CIFAR-10


def validation_count(validation_size: int | float, n_train: int) -> int:
    """The number of validation examples ``validation_size`` (a count or a fraction) means for ``n_train``."""
    count = round(validation_size * n_train) if isinstance(validation_size, float) else int(validation_size)
    if count >= n_train:
        raise ConfigError(
            f"data.validation_size: {validation_size} leaves no training examples out of {n_train:,}; use a "
            "smaller count or fraction"
        )
    return count


def split_and_scale(raw: RawDataset, spec: DataSpec) -> Dataset:
    """The :class:`Dataset` ``spec`` asks for, made from ``raw`` (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    selection = select_classes(raw, spec)
    if selection is None:
        train_keep, test_keep = np.arange(len(raw.y_train)), np.arange(len(raw.y_test))
    else:
        train_keep = np.flatnonzero(selection.lookup[raw.y_train] >= 0)
        test_keep = np.flatnonzero(selection.lookup[raw.y_test] >= 0)
    n_train, n_test = len(train_keep), len(test_keep)
    order = train_keep[rng.permutation(n_train)]
    n_valid = validation_count(spec.validation_size, n_train)
    valid_idx, train_idx = order[:n_valid], order[n_valid:]
    if spec.limit_train is not None:
        train_idx = train_idx[: spec.limit_train]
    test_idx = test_keep
    if spec.limit_test is not None and spec.limit_test < n_test:
        test_idx = test_keep[np.sort(rng.choice(n_test, size=spec.limit_test, replace=False))]

    x_train, x_valid, x_test = (
        _gather(raw.x_train, train_idx),
        _gather(raw.x_train, valid_idx),
        _gather(raw.x_test, test_idx),
    )
    stats = None
    if spec.scaling == "unit":
        for x in (x_train, x_valid, x_test):
            np.divide(x, np.float32(255), out=x)
    elif spec.scaling == "standardize":
        stats = fit_standardization(x_train)
        for x in (x_train, x_valid, x_test):
            x -= stats.mean
            x /= stats.std

    def labels(y: np.ndarray) -> np.ndarray:
        return y if selection is None else selection.lookup[y]

    return Dataset(
        name=raw.name,
        x_train=x_train,
        y_train=labels(raw.y_train[train_idx]),
        x_valid=x_valid,
        y_valid=labels(raw.y_train[valid_idx]),
        x_test=x_test,
        y_test=labels(raw.y_test[test_idx]),
        classes=raw.classes if selection is None else selection.classes,
        source=raw.source,
        scaling_stats=stats,
    )


class ClassSelection(NamedTuple):
    """``lookup[stored label]``: the new label, or -1 for a dropped class; ``classes``: the new names."""

    lookup: np.ndarray
    classes: tuple[str, ...]


def _class_index(value: int | str, classes: tuple[str, ...], key: str, name: str) -> int:
    if isinstance(value, str):
        if value not in classes:
            raise ConfigError(
                f"data.{key}: {value!r} is not a class name of {name} (its classes: {', '.join(classes)})"
            )
        return classes.index(value)
    if not 0 <= value < len(classes):
        raise ConfigError(
            f"data.{key}: {value} is not a class index of {name}, which has classes 0 to {len(classes) - 1}"
        )
    return int(value)


def select_classes(raw: RawDataset, spec: DataSpec) -> ClassSelection | None:
    """The relabelling ``data.classes`` and ``data.positive_class`` ask for, or None for the stored labels.

    Classes are given by index or by name. ``classes = [a, b, c]`` maps a → 0, b → 1, c → 2 and drops the
    rest; ``positive_class = p`` then maps p → 1 and every other kept class → 0 (names: the other class's,
    or ``"not p"`` when several others are kept).
    """
    if spec.classes is None and spec.positive_class is None:
        return None
    n = len(raw.classes)
    kept = (
        [_class_index(c, raw.classes, "classes", raw.name) for c in spec.classes]
        if spec.classes is not None
        else list(range(n))
    )
    if len(set(kept)) < len(kept):
        raise ConfigError(f"data.classes: {spec.classes} names a class twice (by index and by name)")
    lookup = np.full(n, -1, dtype=np.int64)
    lookup[kept] = np.arange(len(kept))
    names = tuple(raw.classes[i] for i in kept)
    if spec.positive_class is not None:
        positive = _class_index(spec.positive_class, raw.classes, "positive_class", raw.name)
        if positive not in kept:
            raise ConfigError(
                f"data.positive_class: {raw.classes[positive]!r} is not among the kept data.classes "
                f"({', '.join(names)}); add it there"
            )
        lookup[kept] = [1 if i == positive else 0 for i in kept]
        others = [raw.classes[i] for i in kept if i != positive]
        names = (others[0] if len(others) == 1 else f"not {raw.classes[positive]}", raw.classes[positive])
    return ClassSelection(lookup, names)


def fit_standardization(x: np.ndarray) -> ScalingStats:
    """Per-feature mean and std (population, ddof=0) of ``x`` over its first axis, as float32.

    Two passes in float64 over blocks of rows: the mean, then the mean squared deviation from it, which is
    exact (0) for a constant feature, unlike ``E[x^2] - E[x]^2``.
    """
    n = len(x)
    if n == 0:
        raise ConfigError(
            "data.limit_train: the training split is empty, so there is nothing to standardize on"
        )
    total = np.zeros(x.shape[1:], dtype=np.float64)
    for block in _blocks(x):
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros_like(mean)
    for block in _blocks(x):
        deviation = block.astype(np.float64) - mean
        squares += np.einsum("i...,i...->...", deviation, deviation)
    std = np.sqrt(squares / n)
    std[std == 0] = 1.0  # constant features: see the module docstring
    return ScalingStats(mean=mean.astype(np.float32), std=std.astype(np.float32))


def _blocks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(x), _ROWS_PER_BLOCK):
        yield x[start : start + _ROWS_PER_BLOCK]


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx]`` as a new float32 array: one gather in the stored dtype (a copy), then one conversion."""
    return x[idx].astype(np.float32, copy=False)
