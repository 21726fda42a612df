"""Checksums: which copy of a dataset a file is, and the error when it is none we know.

A named dataset lists the digests of its published files (:class:`KnownDigest`). A file is *verified* when one
of its digests equals a known one. Every digest a file could need is computed in one read, so a file is read
once however many algorithms its dataset publishes.

A folder has no single digest. Its **tree digest** is the SHA-256 of the ``sha256sum``-style listing of its
files, sorted by relative path, so it can be recomputed with coreutils::

    find train test -type f | LC_ALL=C sort | xargs sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trainwell.errors import DataError

_READ_CHUNK = 1 << 20  # 1 MiB: large enough that hashing, not Python, is the cost
_LABELS = {"md5": "MD5", "sha256": "SHA-256", "sha256-tree": "SHA-256 tree digest"}


@dataclass(frozen=True)
class KnownDigest:
    """A published digest: ``algorithm`` (``"md5"``, ``"sha256"`` or ``"sha256-tree"``), hex ``value``, and
    ``what`` it is the digest of, for messages."""

    algorithm: str
    value: str
    what: str


@dataclass(frozen=True)
class Checksum:
    """What was checked about a copy, as reported by ``dataset_info``.

    ``value`` is one hex digest, or a mapping from file name to hex digest when a copy is several files.
    ``verified`` is true only when every digest equals a published one.
    """

    algorithm: str
    value: str | Mapping[str, str] | None
    verified: bool

    def as_dict(self) -> dict:
        value = dict(self.value) if isinstance(self.value, Mapping) else self.value
        return {"algorithm": self.algorithm, "value": value, "verified": self.verified}


def file_digests(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at ``path`` for each of ``algorithms``, computed in one read."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                for h in hashes.values():
                    h.update(chunk)
    except OSError as e:
        raise DataError(
            f"cannot read {path}: {e.strerror or e}; check that the file exists and is readable"
        ) from e
    return {name: h.hexdigest() for name, h in hashes.items()}


def bytes_digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def tree_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """The SHA-256 of the ``sha256sum`` listing (``"<hex>  <name>\\n"`` per file, sorted by name) of ``files``."""
    # Sorting str by code point equals sorting their UTF-8 bytes, which is what ``LC_ALL=C sort`` does.
    entries = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files)
    listing = "".join(f"{digest}  {name}\n" for name, digest in entries)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def match(digests: Mapping[str, str], known: Iterable[KnownDigest]) -> KnownDigest | None:
    """The first of ``known`` whose value equals the digest of the same algorithm in ``digests``."""
    for k in known:
        if digests.get(k.algorithm) == k.value:
            return k
    return None


_FIX = (
    "The file is corrupt, truncated or not a copy we know: fetch it again, or set verify = false (--no-verify) "
    "if you made this copy yourself"
)


def mismatch_error(
    subject: Path | str, known: Iterable[KnownDigest], digests: Mapping[str, str], fix: str = _FIX
) -> DataError:
    """The error for a file (``subject``) none of whose ``digests`` is ``known``: what was expected, what it
    is, and ``fix``."""
    known = list(known)
    expected = " or ".join(f"{_LABELS.get(k.algorithm, k.algorithm)} {k.value} ({k.what})" for k in known)
    algorithms = dict.fromkeys(k.algorithm for k in known)
    actual = ", ".join(f"{_LABELS.get(a, a)} {digests[a]}" for a in algorithms if a in digests)
    return DataError(f"{subject}: checksum mismatch: expected {expected}; got {actual}. {fix}")
