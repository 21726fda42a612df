"""The cache: decoded datasets as uint8 arrays that load in a fraction of a second, and downloaded files.

Where: ``$TRAINWELL_CACHE``, else ``$XDG_CACHE_HOME/trainwell``, else ``~/.cache/trainwell``; never beside the
data, whose folder may be read-only.

A decoded entry is one uncompressed ``.npz`` under ``decoded/``, named by the dataset and a **key** that
follows the source's content: the SHA-256 of an archive file, or for a folder the names, sizes and
modification times of its files (cheap to read, and editing or replacing a file changes them). Entries are
written atomically, so a decode that fails leaves none. An entry that cannot be read is rebuilt.
``ENTRY_VERSION`` is part of the key, so changing how entries are made retires the old ones instead of
misreading them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainwell.io import WriteError, atomic_open

ENTRY_VERSION = 1
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_dir() -> Path:
    """The folder for trainwell's cache (it may not exist yet)."""
    if explicit := os.environ.get("TRAINWELL_CACHE"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "trainwell"
    return Path.home() / ".cache" / "trainwell"


@dataclass(frozen=True, eq=False)
class Entry:
    """Decoded arrays (images ``(N, H, W, C)`` uint8, labels int64), class names, and JSON-able ``info``
    about the source: its ``format``, and digests taken while decoding (``tree``, the tree digest of an
    image-folder tree; ``md5``, each file of a batches folder) so that a cached folder can be verified."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)


def entry_path(dataset: str, key: str) -> Path:
    """Where the entry of ``dataset`` decoded from the source with content ``key`` lives."""
    digest = hashlib.sha256(f"{ENTRY_VERSION}\0{dataset}\0{key}".encode()).hexdigest()[:32]
    return cache_dir() / "decoded" / f"{dataset}-{digest}.npz"


def cached(dataset: str, key: str, build: Callable[[], Entry]) -> tuple[Entry, Path | None, bool]:
    """The entry for ``(dataset, key)``, built and stored on a miss.

    Returns ``(entry, path, hit)``; ``path`` is None when the entry could not be stored (a warning says why).
    """
    path = entry_path(dataset, key)
    entry = read_entry(path)
    if entry is not None:
        return entry, path, True
    entry = build()
    return entry, (path if write_entry(path, entry) else None), False


def read_entry(path: Path) -> Entry | None:
    """The entry at ``path``, or None when there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in _ARRAYS}
            classes = tuple(str(c) for c in z["classes"])
            info = json.loads(str(z["info"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable cache entry {path} ({e}); decoding the data again", stacklevel=3)
        return None
    return Entry(**arrays, classes=classes, info=info)


def write_entry(path: Path, entry: Entry) -> bool:
    """Store ``entry`` at ``path`` atomically; on failure warn (the data is still usable) and return False."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                **{name: getattr(entry, name) for name in _ARRAYS},
                classes=np.array(entry.classes, dtype=str),
                info=np.array(json.dumps(entry.info)),
            )
    except (OSError, WriteError) as e:  # a read-only or full disk must not stop a load that has its data
        warnings.warn(
            f"cannot write the cache entry {path} ({e}); the data was loaded but will be decoded again next "
            "time. Set TRAINWELL_CACHE to a writable folder to fix this",
            stacklevel=3,
        )
        return False
    return True
