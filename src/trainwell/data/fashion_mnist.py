"""Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test images, 28x28 grey, 10 classes.

Read from the four official IDX files (gzipped or not) in one folder: ``path``, else a folder of
``$TRAINWELL_DATA`` (or its ``fashion-mnist/`` subfolder), else ``SYSTEM_FOLDERS`` (Debian's
``dataset-fashion-mnist`` package), else the cache; missing files are downloaded into the cache.

**Verification** compares the MD5 of each file's *uncompressed* content with the published data's. The
README publishes the MD5s of the ``.gz`` files, but a ``.gz`` can be re-compressed or re-headed without
changing a byte of the data, and Debian's package is: its gzip headers lack the original file name and carry
another time stamp, so its ``.gz`` MD5s differ. Putting the original header back (the name, and the time
stamp 2017-08-31 10:50:06 or 10:50:27 UTC) reproduces each published ``.gz`` MD5 exactly, so Debian's data
is the official data, and the content MD5s below were computed from it (they also match those listed by
other public loaders). Downloads are checked against the published ``.gz`` MD5s.

Reading is fast (about 0.2 s), so nothing is cached.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from trainwell.data.cache import cache_dir
from trainwell.data.checksums import Checksum, KnownDigest, bytes_digest, mismatch_error
from trainwell.data.dataset import RawDataset
from trainwell.data.download import download
from trainwell.data.sources import data_roots, describe, explicit
from trainwell.errors import DataError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# name -> (MD5 of name.gz as published in the Fashion-MNIST README, MD5 of the uncompressed file)
FILES = {
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
SYSTEM_FOLDERS = (Path("/usr/share/datasets/fashion-mnist"),)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SIDE = 28
_UBYTE = 0x08  # IDX type code of unsigned bytes, the third byte of the magic number


def load(path: Path | None, verify: bool) -> RawDataset:
    """Read Fashion-MNIST from the folder ``path`` or the first complete copy found (downloading if none)."""
    folder = _find(path)
    arrays, digests, gz = {}, {}, False
    for name in FILES:
        file, data = _read(folder, name)
        gz |= file.suffix == ".gz"
        digests[name] = bytes_digest(data, "md5")
        if verify and digests[name] != FILES[name][1]:
            known = KnownDigest("md5", FILES[name][1], f"the published uncompressed {name}")
            raise mismatch_error(file, [known], {"md5": digests[name]})
        arrays[name] = parse_idx(data, file, ndim=3 if "images" in name else 1)
    splits = {split: _split(arrays, folder, *names) for split, names in SPLITS.items()}
    return RawDataset(
        name="fashion_mnist",
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        classes=CLASSES,
        path=folder,
        format="Fashion-MNIST IDX files" + (", gzip" if gz else ""),
        checksum=Checksum("md5", digests, verified=all(digests[n] == FILES[n][1] for n in FILES)),
    )


def parse_idx(data: bytes, where: Path, ndim: int) -> np.ndarray:
    """The uint8 array in IDX bytes ``data`` (magic ``0x0000 08 ndim``, big-endian uint32 sizes, values)."""
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != _UBYTE or data[3] != ndim:
        magic = data[:4].hex() if len(data) >= 4 else data.hex()
        raise DataError(
            f"{where}: not an IDX file of {ndim}-d unsigned bytes (magic number 0x{magic}, expected "
            f"0x000008{ndim:02x}); is it the right file, and uncompressed or ending in .gz?"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{where}: its header promises {' x '.join(map(str, dims))} values ({expected:,} bytes in all) but "
            f"the file has {len(data):,} bytes; it is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _split(
    arrays: dict[str, np.ndarray], folder: Path, images: str, labels: str
) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays[images], arrays[labels]
    if x.shape[1:] != (_SIDE, _SIDE):
        raise DataError(f"{folder / images}: images are {x.shape[1]}x{x.shape[2]}; Fashion-MNIST's are 28x28")
    if len(x) != len(y):
        raise DataError(f"{folder}: {images} has {len(x):,} images but {labels} has {len(y):,} labels")
    bad = np.flatnonzero(y >= len(CLASSES))
    if bad.size:
        raise DataError(
            f"{folder / labels}: label {y[bad[0]]} at position {bad[0]} is not a class index 0..9"
        )
    return x[..., None], y.astype(np.int64)  # (N, 28, 28, 1): Keras layout with one channel


def _find(path: Path | None) -> Path:
    if path is not None:
        folder = explicit(path)
        missing = _missing(folder)
        if missing:
            raise DataError(
                f"{folder}: missing {', '.join(missing)} (or the same with .gz); the folder must hold the four "
                "official Fashion-MNIST IDX files"
            )
        return folder
    candidates = [f for root in data_roots() for f in (root, root / "fashion-mnist")]
    candidates += [*SYSTEM_FOLDERS, cache_dir() / "fashion-mnist"]
    for folder in candidates:
        if folder.is_dir() and not _missing(folder):
            return folder
    target = cache_dir() / "fashion-mnist"
    for name in _missing(target):
        try:
            download(
                f"{URL}{name}.gz",
                target / f"{name}.gz",
                KnownDigest("md5", FILES[name][0], f"the official {name}.gz"),
            )
        except DataError as e:
            raise DataError(f"Fashion-MNIST was not found (looked in {describe(candidates)}) and {e}") from e
    return target


def _missing(folder: Path) -> list[str]:
    return [n for n in FILES if not ((folder / n).is_file() or (folder / f"{n}.gz").is_file())]


def _read(folder: Path, name: str) -> tuple[Path, bytes]:
    """The file of ``name`` in ``folder`` (uncompressed preferred) and its uncompressed bytes."""
    raw, gz = folder / name, folder / f"{name}.gz"
    file = raw if raw.is_file() else gz
    try:
        data = file.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {file}: {e.strerror or e}; check its permissions") from e
    if file is gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{file}: not a valid gzip file, or truncated ({e}); fetch it again") from e
    return file, data
