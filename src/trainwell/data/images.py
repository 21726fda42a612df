"""Decoding image files (PNG, JPEG) into one ``(N, H, W, C)`` uint8 array, in parallel where that pays.

**Size and mode policy.** Every image must have the size and the mode of the first one (in name order), and
that mode must be ``L`` (8-bit grey, one channel) or ``RGB`` (three channels). Anything else is refused with
an error naming the file, rather than converted: a palette, an alpha channel or a mix of grey and colour
images in one dataset usually means a mistake in building it, and a silent conversion would hide it and
change what the network sees. The fix (convert or resize the files once) is in the message.

**Parallelism.** Decoding a 32x32 JPEG costs about 50 us, nearly all of it Python overhead in Pillow, so
threads do not help; two worker processes decode the 60,000 CIFAR-10 JPEGs in 1.8 s instead of 2.9 s on the
2-core development machine. Workers are forked, not spawned: a spawned worker re-imports
the caller's main script, which breaks every script without an ``if __name__ == "__main__"`` guard. They run
only Pillow and NumPy code. Where fork is not available, or for fewer than ``PARALLEL_MIN`` images, decoding
runs in this process.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from trainwell.data.progress import progress_bar
from trainwell.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = {"L": 1, "RGB": 3}
# Measured break-even of the pool: about 1,500 small JPEGs (500: 24 ms alone, 37 ms with two workers;
# 4,096: 193 ms alone, 158 ms with two).
PARALLEL_MIN = 2048
WORKERS = 2
_CHUNK = 2000  # images per task: big enough to amortise pickling, small enough for a live progress bar
_FORMATS = ("PNG", "JPEG")
_BROKEN = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)  # Pillow raises all of these


def is_image_name(name: str) -> bool:
    """Whether a relative name is an image this module decodes (hidden files, e.g. ``._x.jpg``, are not)."""
    return name.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in name.split("/"))


def decode_images(blobs: Sequence[bytes], names: Sequence[str], where: Path) -> tuple[np.ndarray, set[str]]:
    """Decode ``blobs`` (the files ``names`` of the folder or archive ``where``) into one uint8 array.

    Returns the ``(N, H, W, C)`` pixels and the set of formats seen (``{"JPEG"}``, ``{"PNG"}`` or both).
    """
    if not blobs:
        raise DataError(f"{where}: no images found; expected .png or .jpg files")
    first = _open(blobs[0], names[0], where)
    mode, size = first.mode, first.size
    if mode not in CHANNELS:
        raise DataError(
            f"{where}: {names[0]}: image mode {mode!r} is not supported; convert the images to 8-bit grey "
            "('L') or RGB first (e.g. PIL's Image.convert('RGB'))"
        )
    pixels = np.empty((len(blobs), size[1], size[0], CHANNELS[mode]), dtype=np.uint8)
    formats: set[str] = set()
    tasks = [
        (s, blobs[s : s + _CHUNK], names[s : s + _CHUNK], where, names[0], mode, size)
        for s in range(0, len(blobs), _CHUNK)
    ]
    label = f"decoding {len(blobs):,} images from {where.name}"

    def place(advance: Callable[[int], None], start: int, chunk: np.ndarray, seen: set[str]) -> None:
        pixels[start : start + len(chunk)] = chunk
        formats.update(seen)
        advance(len(chunk))

    if _parallel(len(blobs)):
        pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))
        try:
            # With fork, the first submit starts every worker: before the progress bar starts its thread.
            futures = [pool.submit(_decode_chunk, *task) for task in tasks]
            with progress_bar(label, len(blobs)) as advance:
                for future in futures:
                    place(advance, *future.result())
        finally:
            pool.shutdown(cancel_futures=True)
    else:
        with progress_bar(label, len(blobs)) as advance:
            for task in tasks:
                place(advance, *_decode_chunk(*task))
    return pixels, formats


def _decode_chunk(
    start: int,
    blobs: Sequence[bytes],
    names: Sequence[str],
    where: Path,
    first: str,
    mode: str,
    size: tuple[int, int],
) -> tuple[int, np.ndarray, set[str]]:
    out = np.empty((len(blobs), size[1], size[0], CHANNELS[mode]), dtype=np.uint8)
    formats = set()
    for i, (blob, name) in enumerate(zip(blobs, names, strict=True)):
        image = _open(blob, name, where)
        if image.size != size:
            raise DataError(
                f"{where}: {name}: image is {image.size[0]}x{image.size[1]} but the first image ({first}) is "
                f"{size[0]}x{size[1]}; all images must have one size, resize them first"
            )
        if image.mode != mode:
            raise DataError(
                f"{where}: {name}: image mode {image.mode!r} differs from the first image's ({first}) {mode!r}; "
                "convert all images to one mode ('L' or 'RGB') first"
            )
        try:
            out[i] = np.asarray(image).reshape(out.shape[1:])
        except _BROKEN as e:
            raise DataError(f"{where}: {name}: cannot decode the image ({e}); the file is damaged") from e
        formats.add(image.format)
    return start, out, formats


def _open(blob: bytes, name: str, where: Path) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(blob), formats=_FORMATS)
        image.load()
    except _BROKEN as e:
        raise DataError(
            f"{where}: {name}: not a readable PNG or JPEG image ({e}); remove or replace it"
        ) from e
    return image


def _parallel(n: int) -> bool:
    return (
        n >= PARALLEL_MIN
        and (os.cpu_count() or 1) > 1
        and sys.platform == "linux"  # fork is the default and safe for this use only there
        and "fork" in multiprocessing.get_all_start_methods()
        and multiprocessing.parent_process() is None  # never fork from inside a worker
    )
