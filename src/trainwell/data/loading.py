"""The datasets by name, and the two entry points: ``load_dataset(spec)`` and ``dataset_info(name)``.

Each dataset module has ``load(path, verify) -> RawDataset``: find a copy, check it, read it (through the
cache when decoding is slow). ``load_dataset`` then splits and scales (``preprocessing``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainwell.data import cifar10, fashion_mnist, imagefolder, npz
from trainwell.data.dataset import Dataset, RawDataset
from trainwell.data.preprocessing import split_and_scale
from trainwell.data.spec import DataSpec
from trainwell.errors import ConfigError
from trainwell.registry import Registry

Loader = Callable[[Path | None, bool], RawDataset]

DATASETS: Registry[Loader] = Registry(
    "dataset",
    {
        "cifar10": cifar10.load,
        "fashion_mnist": fashion_mnist.load,
        "imagefolder": imagefolder.load,
        "npz": npz.load,
    },
)


def as_spec(spec: DataSpec | Mapping[str, Any]) -> DataSpec:
    """``spec`` itself, or the mapping validated into a :class:`DataSpec`; errors name the key (``data.<key>``)."""
    if isinstance(spec, DataSpec):
        return spec
    try:
        return DataSpec.model_validate(spec)
    except ValidationError as e:
        raise ConfigError("; ".join(_describe(err) for err in e.errors())) from None


def _describe(err: Mapping[str, Any]) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(part) for part in err["loc"])
    if not loc:
        # The spec's own checks (model validators) start their message with the key they are about.
        key = re.match(r"(\w+): (.*)", message, re.DOTALL)
        if key:
            loc, message = key.groups()
    return f"data.{loc}: {message}" if loc else f"data: {message}"


def load_raw(name: str, path: Path | str | None = None, verify: bool = True) -> RawDataset:
    """The train and test arrays of dataset ``name`` as stored, from ``path`` or the first copy found."""
    loader = DATASETS[name]
    return loader(Path(path) if path is not None else None, verify)


def load_dataset(spec: DataSpec | Mapping[str, Any]) -> Dataset:
    """Load the dataset a ``[data]`` spec (or a dict of one) describes, split and scaled.

    Example: ``load_dataset({"dataset": "cifar10", "validation_size": 5000, "scaling": "standardize"})``.
    """
    spec = as_spec(spec)
    return split_and_scale(load_raw(spec.dataset, spec.path, spec.verify), spec)


def dataset_info(name: str, path: Path | str | None = None, verify: bool = True) -> dict[str, Any]:
    """A JSON-able description of the copy of dataset ``name`` that would be loaded.

    Keys: ``name``, ``source``, ``path``, ``format``, ``classes``, ``num_classes``, ``input_shape``,
    ``counts`` (``train``, ``test``), ``checksum`` (``algorithm``, ``value``, ``verified``; ``value`` maps file
    names to digests when a copy is several files) and ``cache_entry`` (None when the data is not cached).
    """
    DATASETS[name]  # an unknown name is reported with the valid ones before the spec's own check
    spec = as_spec({"dataset": name, "path": path, "verify": verify})
    raw = load_raw(spec.dataset, spec.path, spec.verify)
    return {
        "name": raw.name,
        "source": raw.source,
        "path": str(raw.path),
        "format": raw.format,
        "classes": list(raw.classes),
        "num_classes": len(raw.classes),
        "input_shape": [int(d) for d in raw.x_train.shape[1:]],
        "counts": {"train": len(raw.y_train), "test": len(raw.y_test)},
        "checksum": raw.checksum.as_dict() if raw.checksum is not None else None,
        "cache_entry": str(raw.cache_entry) if raw.cache_entry is not None else None,
    }
