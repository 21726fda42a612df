"""The ``[data]`` table of a config: which dataset, where from, and how to split and scale it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trainwell.spec import Spec

DATASET_NAMES = ("cifar10", "fashion_mnist", "imagefolder", "npz")


class DataSpec(Spec):
    """Where the data comes from and how it is split and scaled.

    ``validation_size`` is a count of training examples (an int >= 0) or a fraction (a float in (0, 1)),
    taken from the training set with a shuffle seeded by ``seed``. ``limit_train`` trims the *training part
    only*, after the validation split, for quick runs; ``limit_test`` keeps a seeded random subset of the
    test set.
    ``scaling``: ``"unit"`` divides pixels by 255, ``"standardize"`` subtracts the per-feature mean and
    divides by the per-feature std of the training split (then applies both to every split), ``"none"``
    keeps raw values (as float32).
    ``classes`` keeps only the listed classes (indices or names) before anything else, relabelled 0, 1, ...
    in the listed order; ``positive_class`` makes the task binary: label 1 for that class, 0 for every other
    (kept) class — e.g. ``classes = [5, 6], positive_class = 6`` is the chapter's sandal-vs-shirt task.
    """

    dataset: Literal["cifar10", "fashion_mnist", "imagefolder", "npz"]
    path: Path | None = None
    verify: bool = True
    validation_size: int | float = Field(default=0, ge=0)
    limit_train: int | None = Field(default=None, gt=0)
    limit_test: int | None = Field(default=None, gt=0)
    scaling: Literal["unit", "standardize", "none"] = "unit"
    seed: int = 42
    classes: list[int | str] | None = Field(default=None, min_length=2)  # keep-list, relabelled in order
    positive_class: int | str | None = None  # binary: this class is 1, the others 0

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.classes is not None and len(set(self.classes)) < len(self.classes):
            raise ValueError(f"classes: each class may be listed once (got {self.classes})")
        if isinstance(self.validation_size, float) and not 0.0 < self.validation_size < 1.0:
            raise ValueError(
                f"validation_size: a float must be a fraction in (0, 1), got {self.validation_size}; "
                "use an int for a count of examples"
            )
        if self.dataset in ("imagefolder", "npz") and self.path is None:
            raise ValueError(f"path: dataset {self.dataset!r} needs a path to the folder or file")
        return self
