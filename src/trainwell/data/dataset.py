"""A loaded dataset: its splits as NumPy arrays in Keras layout, its classes, and where it came from.

:class:`RawDataset` is what a dataset module reads (pixels as stored, train and test only);
:class:`Dataset` is what ``load_dataset`` returns after splitting and scaling (see ``preprocessing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from trainwell.data.checksums import Checksum


class ScalingStats(NamedTuple):
    """Per-feature mean and std (shape ``input_shape``, float32, raw pixel units) fitted on the training split."""

    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True, eq=False)
class Dataset:
    """Splits ready for training: ``x_*`` float32 ``(N, H, W, C)``, ``y_*`` int64 class indices.

    ``x_valid`` has 0 rows when no validation split was asked for. ``source`` says which copy was read
    (path and format); ``scaling_stats`` holds the mean and std used when ``scaling = "standardize"``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    scaling_stats: ScalingStats | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(32, 32, 3)``: Keras's ``input_shape``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A dataset as read from one copy: train and test arrays as stored, and that copy's provenance.

    ``format`` describes the layout (``"image folders, JPEG"``); ``checksum`` what was checked (None when
    nothing was); ``cache_entry`` the decoded entry it was read from or stored to (None when not cached).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    path: Path
    format: str
    checksum: Checksum | None = None
    cache_entry: Path | None = None

    @property
    def source(self) -> str:
        return f"{self.path} ({self.format})"
