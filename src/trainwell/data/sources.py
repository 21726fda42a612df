"""Where a named dataset is looked for: an explicit path, then ``$TRAINWELL_DATA``, then the cache.

``$TRAINWELL_DATA`` is a folder (or several, separated by ``os.pathsep`` like ``PATH``) holding datasets
under their usual file names; each dataset module lists the names it looks for and what it does when none is
found (download into the cache, or an error that says where to put the files).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from trainwell.data.cache import cache_dir
from trainwell.errors import DataError


def data_roots() -> list[Path]:
    """The folders named by ``$TRAINWELL_DATA``, in order (empty when it is unset)."""
    value = os.environ.get("TRAINWELL_DATA", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def search_roots() -> list[Path]:
    """``$TRAINWELL_DATA``'s folders, then the cache folder: where a copy of a named dataset may be."""
    return [*data_roots(), cache_dir()]


def explicit(path: Path | str) -> Path:
    """A user-given ``path``, with ``~`` expanded; an error naming it when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p} does not exist; check data.path (or --path)")
    return p


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def describe(candidates: Iterable[Path]) -> str:
    """The places searched, for a 'not found' message."""
    return ", ".join(str(c) for c in candidates)
