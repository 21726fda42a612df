"""Downloading a dataset file into the cache: progress bar on stderr, checksum verified, all or nothing.

The file is written to a temporary name beside its destination and renamed only once it is complete and its
digest equals the published one, so an interrupted or corrupted download leaves nothing behind and is never
mistaken for a good copy. Downloads are always verified, whatever ``verify`` says: the URL and the checksum
come from the same table, so a mismatch means a damaged transfer or a changed server, never a copy of one's
own.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path

from trainwell.data.checksums import KnownDigest, mismatch_error
from trainwell.data.progress import progress_bar
from trainwell.errors import DataError
from trainwell.io import WriteError, atomic_open

TIMEOUT_S = 60  # per socket operation, not for the whole file: a slow but live server is fine
_CHUNK = 1 << 20


def download(url: str, dest: Path, known: KnownDigest) -> Path:
    """Fetch ``url`` to ``dest``, verified against ``known``; returns ``dest``."""
    if not url.startswith(("https://", "http://")):
        raise DataError(f"refusing to download {url!r}: only http and https URLs are fetched")
    hint = f"put the file at {dest} (or in a folder named by $TRAINWELL_DATA) yourself, or try again"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(dest, "wb") as f:
            digest = hashlib.new(known.algorithm)
            try:
                response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (scheme checked above)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                raise DataError(f"cannot download {url}: {getattr(e, 'reason', e)}; {hint}") from e
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with progress_bar(f"downloading {dest.name}", total, in_bytes=True) as advance:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except (OSError, http.client.HTTPException) as e:
                            raise DataError(
                                f"download of {url} broke off after {received:,} bytes: {e}; {hint}"
                            ) from e
                        if not chunk:
                            break
                        f.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        advance(len(chunk))
            if total is not None and received != total:
                raise DataError(f"download of {url} is incomplete: {received:,} of {total:,} bytes; {hint}")
            actual = digest.hexdigest()
            if actual != known.value:
                raise mismatch_error(
                    f"download of {url}",
                    [known],
                    {known.algorithm: actual},
                    fix="nothing was kept. The server sent a different file: try again later, or fetch the file "
                    f"yourself and put it at {dest}",
                )
    except (OSError, WriteError) as e:
        raise DataError(
            f"cannot store the download of {url} at {dest}: {e}; set TRAINWELL_CACHE to a writable folder"
        ) from e
    return dest
