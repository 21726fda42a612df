"""A dataset in one NumPy ``.npz`` file: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optional ``classes``.

``x`` arrays are numeric, ``(N, ...)`` with the same example shape in both splits (images are expected as
``(N, H, W, C)``; nothing is reshaped), and finite. ``y`` arrays are 1-d integer class indices, one per
example, in ``0 .. num_classes - 1``; ``num_classes`` is ``len(classes)`` when ``classes`` (strings) is given,
else the largest label plus one, and the classes are then named ``"0"``, ``"1"``, ... The file is loaded with
``allow_pickle=False``: an ``.npz`` holding Python objects is refused rather than unpickled.

No checksums are published for such files, so ``verify`` has nothing to check; the SHA-256 is reported.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from trainwell.data.checksums import Checksum, file_digests
from trainwell.data.dataset import RawDataset
from trainwell.data.sources import explicit
from trainwell.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
_ROWS_PER_CHECK = 4096  # rows checked for NaN/inf at a time: bounds the temporary boolean array


def load(path: Path | None, verify: bool) -> RawDataset:
    """Read and validate the ``.npz`` at ``path`` (required)."""
    if path is None:
        raise DataError("dataset 'npz' needs a path to a .npz file with x_train, y_train, x_test, y_test")
    path = explicit(path)
    arrays, classes = _read(path)
    x_train, y_train, x_test, y_test = (arrays[k] for k in REQUIRED)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _check_pair(path, split, x, y)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: x_train examples have shape {x_train.shape[1:]} but x_test examples {x_test.shape[1:]}; "
            "both splits need the same example shape"
        )
    if classes is None:
        top = max(int(y.max(initial=-1)) for y in (y_train, y_test))
        classes = tuple(str(i) for i in range(top + 1))
    for split, y in (("train", y_train), ("test", y_test)):
        _check_labels(path, split, y, len(classes))
    for split, x in (("train", x_train), ("test", x_test)):
        _check_finite(path, split, x)
    return RawDataset(
        name="npz",
        x_train=x_train,
        y_train=y_train.astype(np.int64, copy=False),
        x_test=x_test,
        y_test=y_test.astype(np.int64, copy=False),
        classes=classes,
        path=path,
        format="NumPy .npz",
        checksum=Checksum("sha256", file_digests(path, ("sha256",))["sha256"], verified=False),
    )


def _read(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...] | None]:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single array, not an .npz archive; save with numpy.savez(...)")
        with z:
            missing = [k for k in REQUIRED if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: missing {', '.join(missing)} (found: {', '.join(z.files) or 'nothing'}); an .npz "
                    f"dataset needs {', '.join(REQUIRED)}"
                )
            arrays = {k: z[k] for k in REQUIRED}
            classes = z["classes"] if "classes" in z.files else None
    except DataError:
        raise
    except ValueError as e:  # raised for pickled (object) arrays when allow_pickle=False, among others
        raise DataError(
            f"{path}: cannot read it without unpickling Python objects ({e}); save plain numeric arrays"
        ) from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}); save it again with numpy.savez") from e
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(
                f"{path}: 'classes' must be a 1-d array of strings, got {classes.dtype} {classes.shape}"
            )
        classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist())
    return arrays, classes


def _check_pair(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: x_{split} has dtype {x.dtype}; it must be numeric (integers or floats)")
    if x.ndim < 2:
        raise DataError(
            f"{path}: x_{split} has shape {x.shape}; it must be (N, ...) with one row per example"
        )
    if y.dtype.kind not in "ui":
        raise DataError(f"{path}: y_{split} has dtype {y.dtype}; labels must be integer class indices")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{path}: y_{split} has shape {y.shape}; it must be ({len(x)},): one label per row of x_{split}"
        )


def _check_labels(path: Path, split: str, y: np.ndarray, num_classes: int) -> None:
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise DataError(
            f"{path}: y_{split}[{bad[0]}] = {y[bad[0]]} is not a class index 0..{num_classes - 1} "
            f"({bad.size} bad labels in all); fix the labels or the 'classes' array"
        )


def _check_finite(path: Path, split: str, x: np.ndarray) -> None:
    if x.dtype.kind != "f":
        return
    for start in range(0, len(x), _ROWS_PER_CHECK):
        rows = x[start : start + _ROWS_PER_CHECK]
        finite = np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            what = "NaN" if np.isnan(x[row]).any() else "inf"
            raise DataError(
                f"{path}: x_{split}[{row}] contains {what}; remove or repair the examples that do"
            )
