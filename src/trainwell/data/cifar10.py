"""CIFAR-10 (Krizhevsky, 2009): 50,000 training and 10,000 test images, 32x32 RGB, 10 classes.

Two layouts are read, each as a folder or an archive:

- the official **python batches** (``cifar-10-python.tar.gz``, or its extracted ``cifar-10-batches-py/``):
  pickled dicts whose ``data`` rows are channel-planar (1,024 red, then green, then blue values, each plane
  row-major), returned here as true ``(N, 32, 32, 3)`` pixels;
- **image folders** ``train/<class>/*`` and ``test/<class>/*`` (PNG or JPEG, e.g. ``cifar10-jpeg.tar.gz``),
  whose class folders must be the official class names (sorted, they are the official label order).

Without a ``path``, each folder of ``$TRAINWELL_DATA`` and then the cache is searched for ``SEARCH_NAMES`` in
order; if none is there, the official archive is downloaded into the cache.

**Verification.** An archive file must have a published digest (``ARCHIVES``: the official MD5, or the
SHA-256 of ``cifar10-jpeg.tar.gz``). An extracted folder cannot be hashed as the archive was, so its content
is checked instead: the official batch files against their published per-file MD5s (``BATCH_MD5``), an
image-folder tree by its tree digest (``JPEG_TREE``, see ``checksums``) against the tree inside
``cifar10-jpeg.tar.gz``. A folder is checked when it is decoded, and the result is kept with the cached entry,
whose key changes when any file's size or modification time does. With ``verify = false`` nothing is
refused, for copies one made oneself.

**Pickles.** Batches are unpickled by ``_BatchUnpickler``, which can rebuild only dicts, lists, bytes, str,
numbers and NumPy arrays, so a hostile batch cannot run code, verified or not.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from trainwell.data import archives, cache, imagefolder
from trainwell.data.cache import cache_dir
from trainwell.data.checksums import Checksum, KnownDigest, bytes_digest, file_digests, match, mismatch_error
from trainwell.data.dataset import RawDataset
from trainwell.data.download import download
from trainwell.data.images import is_image_name
from trainwell.data.sources import describe, explicit, first_existing, search_roots
from trainwell.errors import DataError

try:  # NumPy 2 moved the functions that pickled arrays name; NumPy 1 has them only here
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL = KnownDigest("md5", "c58f30108f718f92721af3b95e74349a", "the official cifar-10-python.tar.gz")
JPEG = KnownDigest(
    "sha256", "aaeeb949bdcc9fa3353653ec4684ffa8780a48fa37e67a38d4757cc03dbc8849", "cifar10-jpeg.tar.gz"
)
ARCHIVES = {"cifar-10-python.tar.gz": OFFICIAL, "cifar10-jpeg.tar.gz": JPEG}
# The MD5 of each file of the official archive, as published with torchvision's CIFAR10 dataset.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# Computed from the verified cifar10-jpeg.tar.gz; after extracting it, reproduce with
# `find train test -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`.
JPEG_TREE = KnownDigest(
    "sha256-tree",
    "f10d4c9e536a564f17fa5e8d68ba087d1235e60cd1f21700e11ff43f0647bbb0",
    "the images of cifar10-jpeg.tar.gz",
)
SEARCH_NAMES = ("cifar-10-python.tar.gz", "cifar-10-batches-py", "cifar10-jpeg.tar.gz", "cifar10")
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
BATCHES_FORMAT = "CIFAR-10 python batches"
_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE  # one row of a batch: three 32x32 planes


def load(path: Path | None, verify: bool) -> RawDataset:
    """Read CIFAR-10 from ``path`` or the first copy found (downloading the official archive if none is)."""
    copy = explicit(path) if path is not None else _find()
    if copy.is_dir():
        batches = _batches_folder(copy)
        if batches is not None:
            return _load_batches_folder(batches, verify)
        return imagefolder.read(
            copy, dataset="cifar10", known_tree=JPEG_TREE, verify=verify, check=_check_tree
        )
    return _load_archive(copy, verify)


def _find() -> Path:
    candidates = [root / name for root in search_roots() for name in SEARCH_NAMES]
    found = first_existing(candidates)
    if found is not None:
        return found
    try:
        return download(URL, cache_dir() / "cifar-10-python.tar.gz", OFFICIAL)
    except DataError as e:
        raise DataError(f"CIFAR-10 was not found (looked for {describe(candidates)}) and {e}") from e


def _load_archive(path: Path, verify: bool) -> RawDataset:
    digests = file_digests(path, ("md5", "sha256"))
    known = match(digests, ARCHIVES.values())
    if verify and known is None:
        expected = [ARCHIVES[path.name]] if path.name in ARCHIVES else list(ARCHIVES.values())
        raise mismatch_error(path, expected, digests)
    if known is not None:
        checksum = Checksum(known.algorithm, digests[known.algorithm], verified=True)
    else:
        checksum = Checksum("sha256", digests["sha256"], verified=False)
    key = f"sha256:{digests['sha256']}"

    def build() -> cache.Entry:
        files = archives.read_files(path, lambda n: _is_batch(n) or is_image_name(n))
        batches = {name.rsplit("/", 1)[-1]: data for name, data in files.items() if _is_batch(name)}
        if batches:
            return _decode_batches(batches, path)
        entry = imagefolder.decode_tree(files, path)
        _check_tree(entry, path)
        return entry

    entry, entry_path, _ = cache.cached("cifar10", key, build)
    return _raw(entry, path, checksum, entry_path)


def _is_batch(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and parts[-1] in BATCH_MD5  # at the top, or in one folder (cifar-10-batches-py/)


def _batches_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _load_batches_folder(folder: Path, verify: bool) -> RawDataset:
    missing = [name for name in BATCH_MD5 if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)}; the official batches folder has {', '.join(BATCH_MD5)}"
        )
    fingerprint = archives.folder_fingerprint(folder, lambda n: n in BATCH_MD5)
    key = "folder:" + hashlib.sha256(repr(fingerprint).encode()).hexdigest()

    def build() -> cache.Entry:
        files = {name: _read(folder / name) for name in BATCH_MD5}
        entry = _decode_batches(files, folder)
        entry.info["md5"] = {name: bytes_digest(data, "md5") for name, data in files.items()}
        return entry

    entry, entry_path, _ = cache.cached("cifar10", key, build)
    md5 = entry.info["md5"]
    bad = [name for name in BATCH_MD5 if md5[name] != BATCH_MD5[name]]
    if verify and bad:
        name = bad[0]
        raise mismatch_error(
            folder / name, [KnownDigest("md5", BATCH_MD5[name], f"the official {name}")], {"md5": md5[name]}
        )
    return _raw(entry, folder, Checksum("md5", md5, verified=not bad), entry_path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e


def _decode_batches(files: Mapping[str, bytes], where: Path) -> cache.Entry:
    """The official batches (file name to content) as HWC pixels; every batch file must be there."""
    missing = [name for name in BATCH_MD5 if name not in files]
    if missing:
        raise DataError(
            f"{where}: missing {', '.join(missing)}; the official batches are {', '.join(BATCH_MD5)}"
        )
    meta = _unpickle(files["batches.meta"], where, "batches.meta")
    names = _field(meta, "label_names", where, "batches.meta")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    if classes != CLASSES:
        raise DataError(
            f"{where}: batches.meta names the classes {list(classes)}, not CIFAR-10's {list(CLASSES)}; "
            "for other data use dataset = 'npz' or 'imagefolder'"
        )
    train = [_batch(files[name], where, name) for name in TRAIN_BATCHES]
    x_test, y_test = _batch(files["test_batch"], where, "test_batch")
    return cache.Entry(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        classes=CLASSES,
        info={"format": BATCHES_FORMAT},
    )


def _batch(blob: bytes, where: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(blob, where, name)
    data = _field(d, "data", where, name)
    labels = np.asarray(_field(d, "labels", where, name))
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _PIXELS
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: {name}: 'data' must be uint8 rows of {_PIXELS} values, got {got}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: {name}: 'labels' must be {len(data)} integers, one per row of 'data'")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        raise DataError(f"{where}: {name}: label {labels[bad[0]]} at row {bad[0]} is not a class index 0..9")
    # Each row is three planes (R, G, B) of 32 rows of 32 pixels: (N, C, H, W), moved to Keras's (N, H, W, C).
    pixels = np.ascontiguousarray(data.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1))
    return pixels, labels.astype(np.int64)


def _field(d: object, key: str, where: Path, name: str) -> object:
    """``d[key]`` for a batch dict, whose keys are bytes in the official (Python 2) pickles."""
    if isinstance(d, dict):
        for k in (key.encode(), key):
            if k in d:
                return d[k]
    raise DataError(f"{where}: {name} has no {key!r} entry; it is not a CIFAR-10 python batch")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, "latin1"); nothing else is needed.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches and nothing else.

    A pickle runs code by naming a global callable; the only globals allowed here are those NumPy needs to
    rebuild an array (``_reconstruct`` up to protocol 4, ``_frombuffer`` at protocol 5) and the one Python 3
    needs to rebuild bytes at protocol 2.
    """

    ALLOWED: dict[tuple[str, str], object] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of a CIFAR-10 batch"
            ) from None


def _unpickle(blob: bytes, where: Path, name: str) -> object:
    try:
        return _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        MemoryError,
    ) as e:
        raise DataError(
            f"{where}: {name} is not a readable CIFAR-10 batch ({e}); fetch the dataset again"
        ) from e


def _check_tree(entry: cache.Entry, where: Path) -> None:
    if entry.classes != CLASSES:
        raise DataError(
            f"{where}: class folders are {list(entry.classes)}; CIFAR-10's are {list(CLASSES)}. For other "
            "classes use dataset = 'imagefolder'"
        )
    if entry.x_train.shape[1:] != (_SIDE, _SIDE, 3):
        raise DataError(
            f"{where}: images are {entry.x_train.shape[1:]} (H, W, C); CIFAR-10's are (32, 32, 3)"
        )


def _raw(entry: cache.Entry, path: Path, checksum: Checksum, entry_path: Path | None) -> RawDataset:
    return RawDataset(
        name="cifar10",
        x_train=entry.x_train,
        y_train=entry.y_train,
        x_test=entry.x_test,
        y_test=entry.y_test,
        classes=entry.classes,
        path=path,
        format=entry.info["format"],
        checksum=checksum,
        cache_entry=entry_path,
    )
