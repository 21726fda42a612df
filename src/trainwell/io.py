"""Atomic file writes: a file is either its old content or its complete new content, never half-written.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it over the target
(atomic on POSIX and Windows) and fsync the folder so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trainwell.errors import TrainwellError


class WriteError(TrainwellError):
    """A file could not be written; the previous version, if any, is intact."""

    exit_code = 1


def _fsync_dir(folder: Path) -> None:
    # Directories cannot be opened for fsync on every platform; where they can't, the rename is still atomic.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if "w" not in mode:
        raise ValueError(f"atomic_open writes only, got mode {mode!r}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}; the previous version is intact") from e
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {e.strerror or e}; the previous version is intact") from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[IO], None], mode: str = "wb") -> None:
    """Atomically write ``path`` by calling ``writer`` on an open file (e.g. ``torch.save``)."""
    with atomic_open(path, mode) as f:
        writer(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
