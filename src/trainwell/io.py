"""Atomic file writes: a file is either its old content or its complete new content, never half-written.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it over the target
(atomic on POSIX and Windows) and fsync the folder so the rename itself survives a power cut. A write that
fails — a read-only folder, a full disk, a file-size limit — removes its temporary file and raises a
:class:`WriteError` naming the file; the previous version is untouched. A process killed mid-write (SIGKILL,
power cut) may leave a hidden ``.NAME.*.tmp`` file beside the target, never a damaged target.

:func:`exclusive_lock` keeps two processes from writing one run folder at once. It is an advisory
``flock`` on a lock file: the kernel releases it when its holder exits, however it exits, so a crashed run
never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trainwell.errors import RunError, TrainwellError

try:  # POSIX only; where it is missing (Windows) runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class WriteError(TrainwellError):
    """A file could not be written; the previous version, if any, is intact."""

    exit_code = 1


def write_error(path: Path, error: OSError) -> WriteError:
    """The error for a failed write of ``path``: where, why, and what is left."""
    reason = error.strerror or str(error)
    left = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return WriteError(
        f"cannot write {path}: {reason}; {left}. Free some disk space or make {path.parent} writable, then "
        "try again"
    )


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

    On an exception the temporary file is removed and ``path`` is left as it was; an ``OSError`` (no space,
    no permission, file too large) becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    if "w" not in mode:
        raise ValueError(f"atomic_open writes only, got mode {mode!r}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise write_error(path, e) from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed mid-way left in ``folder``; return their paths.

    Call it only while no other process can be writing there (e.g. holding the folder's lock).
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


class _FailedWriteRecorder:
    """A write-only file that passes everything to ``file`` and remembers the first ``OSError`` it raised.

    ``torch.save`` writes through a C++ stream that catches the ``OSError`` of a failed write (ENOSPC, EFBIG,
    EACCES) and raises its own ``RuntimeError`` ("unexpected pos ..."), which says neither what nor where.
    Keeping the OS's error lets :func:`write_with` report the real reason. It offers only ``write`` and
    ``flush``: all that ``torch.save`` and other stream writers use.
    """

    def __init__(self, file: IO[bytes]):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def write_with(path: str | os.PathLike, writer: Callable[[IO], None], mode: str = "wb") -> None:
    """Atomically write ``path`` by calling ``writer`` on a write-only stream (e.g. ``torch.save``).

    A writer that swallows the ``OSError`` of a failed write and raises something else still gives a
    :class:`WriteError` with the OS's reason.
    """
    with atomic_open(path, mode) as f:
        recorder = _FailedWriteRecorder(f)
        try:
            writer(recorder)
        except OSError:
            raise
        except Exception as e:
            if recorder.error is not None:
                raise recorder.error from e
            raise


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Raises :class:`~trainwell.errors.RunError` when another process holds it; the message names ``what``
    is locked and the holder's process id, which the lock file records.
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover - no flock on this platform
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{what} is in use by another process (pid {holder}); wait for it to end or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_holder(path: str | os.PathLike) -> str | None:
    """The process id recorded in the lock file ``path`` when a live process holds it, else None."""
    path = Path(path)
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            # A shared lock is refused while someone holds the exclusive one; taken, it is dropped at close.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        return None
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
