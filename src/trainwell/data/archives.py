"""Reading the files of a folder, a tar archive or a zip archive into memory, safely, without extracting.

Archives are never extracted: their members are read straight into memory, so a hostile archive cannot write
anything anywhere. Member names are still checked, because a name is what a tree's layout (``train/<class>/…``)
is read from: an absolute name, a ``..`` component, a link (symbolic or hard), a device or FIFO, or a name that
appears twice is refused with an error naming the archive and the member, before any content is used. A
truncated or corrupt archive is an error naming the file.

A folder is the user's own tree, so its symbolic links are followed (a tree of links to images kept elsewhere
is a common way to build one); a link that loops back is visited once.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from trainwell.errors import DataError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
_UNIX = 3  # zipfile's create_system for archives made on Unix
_DRIVE = re.compile(r"^[A-Za-z]:")
# What a damaged tar, gzip, xz or zip stream raises from the standard library, besides the OSError without an
# errno that gzip and bz2 raise (see read_files); a stream that ends early raises EOFError.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ValueError)


def container_kind(path: Path) -> str:
    """``"folder"``, ``"tar"`` or ``"zip"`` for ``path``; a missing path or another suffix is an error."""
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path")
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    raise DataError(
        f"{path}: unsupported file type; expected a folder or an archive ending in "
        f"{', '.join(TAR_SUFFIXES + ZIP_SUFFIXES)}"
    )


def member_name(archive: Path, name: str) -> str:
    """``name`` as a clean relative POSIX path (``./`` and empty parts dropped), or an error if it is unsafe."""
    # Backslashes separate folders on Windows, so they count as separators for these checks.
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise _refuse(archive, name, "an absolute path")
    if ".." in parts:
        raise _refuse(archive, name, "it points outside the archive ('..')")
    return "/".join(p for p in parts if p not in ("", "."))


def read_files(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """The content of every regular file of the folder or archive at ``path`` whose relative name ``want``s.

    Every member is checked (see the module docstring) whether it is wanted or not.
    """
    kind = container_kind(path)
    if kind == "folder":
        return _read_folder(path, want)
    try:
        return _read_tar(path, want) if kind == "tar" else _read_zip(path, want)
    except DataError:
        raise
    except OSError as e:
        if e.errno is None:  # not the file system's complaint: a damaged stream (e.g. gzip.BadGzipFile)
            raise _corrupt(path, e) from e
        raise DataError(f"cannot read {path}: {e.strerror or e}; check that it exists and is readable") from e
    except _CORRUPT as e:
        raise _corrupt(path, e) from e


def _refuse(archive: Path, member: str, why: str) -> DataError:
    return DataError(
        f"{archive}: refusing member {member!r}: {why}; the archive is unsafe and was not used "
        "(nothing was extracted or written)"
    )


def _corrupt(path: Path, e: Exception) -> DataError:
    return DataError(
        f"{path}: the archive is truncated or corrupt ({type(e).__name__}: {e}); fetch or copy it again"
    )


def folder_files(root: Path, want: Callable[[str], bool]) -> list[tuple[str, Path]]:
    """``(relative name, path)`` of every wanted regular file under ``root``, sorted by name."""
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: its files are listed already
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()
        for name in files:
            full = Path(folder, name)
            rel = full.relative_to(root).as_posix()
            if want(rel) and full.is_file():
                found.append((rel, full))
    found.sort()
    return found


def folder_fingerprint(root: Path, want: Callable[[str], bool]) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of each wanted file under ``root``: cheap, and changes when a file does."""
    out = []
    for rel, full in folder_files(root, want):
        try:
            st = full.stat()
        except OSError as e:
            raise DataError(f"cannot read {full}: {e.strerror or e}") from e
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def _read_folder(root: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    files = {}
    for rel, full in folder_files(root, want):
        try:
            files[rel] = full.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {full}: {e.strerror or e}; check its permissions") from e
    return files


def _read_tar(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    # Stream mode ("r|*") reads the archive once, front to back: random access into a compressed tar would
    # decompress it again for every member.
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            name = member_name(path, member.name)
            if member.issym() or member.islnk():
                kind = "symbolic link" if member.issym() else "hard link"
                raise _refuse(path, member.name, f"a {kind} to {member.linkname!r}")
            if member.isdir():
                continue
            if not member.isfile():
                raise _refuse(path, member.name, "a device or FIFO, not a regular file")
            if name in seen:
                raise _refuse(path, member.name, "it appears twice")
            seen.add(name)
            if want(name):
                f = tar.extractfile(member)
                files[name] = f.read() if f is not None else b""
    return files


def _read_zip(path: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        seen: set[str] = set()
        for info in infos:  # check every name before reading any content
            name = member_name(path, info.filename)
            # The high 16 bits hold a Unix mode when the zip was made on Unix (create_system 3); the type bits
            # may be absent (Python's writestr leaves them 0), which means a regular file.
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == _UNIX else 0
            if kind == stat.S_IFLNK:
                raise _refuse(path, info.filename, "a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(path, info.filename, "a device or FIFO, not a regular file")
            if name in seen:
                raise _refuse(path, info.filename, "it appears twice")
            seen.add(name)
        for info in infos:
            name = member_name(path, info.filename)
            if not info.is_dir() and want(name):
                files[name] = zf.read(info)  # checks the CRC: a damaged member raises BadZipFile
    return files
