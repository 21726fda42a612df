"""The .npz format: validation of keys, shapes, dtypes, label range and finiteness, without unpickling."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.data import load_dataset
from trainwell.data.loading import load_raw
from trainwell.errors import DataError


def arrays(n_train=8, n_test=4, shape=(4, 4, 3), classes=3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape)).astype(np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape)).astype(np.uint8),
        "y_test": np.arange(n_test) % classes,
    }


def save(tmp_path, **a):
    path = tmp_path / "d.npz"
    np.savez(path, **a)
    return path


def test_a_valid_file_with_and_without_class_names(tmp_path):
    a = arrays()
    raw = load_raw("npz", save(tmp_path, **a))
    np.testing.assert_array_equal(raw.x_train, a["x_train"])
    assert raw.classes == ("0", "1", "2") and raw.y_train.dtype == np.int64
    named = load_raw("npz", save(tmp_path, **a, classes=np.array(["a", "b", "c", "d"])))
    assert named.classes == ("a", "b", "c", "d")
    ds = load_dataset({"dataset": "npz", "path": str(tmp_path / "d.npz")})
    assert ds.num_classes == 4 and ds.input_shape == (4, 4, 3)


def test_a_label_out_of_range_is_named(tmp_path):
    a = arrays()
    a["y_test"][2] = 3
    path = save(tmp_path, **a, classes=np.array(["a", "b", "c"]))
    with pytest.raises(
        DataError, match=rf"{path}: y_test\[2\] = 3 is not a class index 0..2 \(1 bad labels in all\)"
    ):
        load_raw("npz", path)
    a["y_test"][2] = -1
    with pytest.raises(DataError, match=r"y_test\[2\] = -1 is not a class index"):
        load_raw("npz", save(tmp_path, **a))


@pytest.mark.parametrize(("bad", "word"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_inputs_are_named(tmp_path, bad, word):
    a = arrays()
    a["x_train"] = a["x_train"].astype(np.float32)
    a["x_train"][5, 1, 2, 0] = bad
    path = save(tmp_path, **a)
    with pytest.raises(DataError, match=rf"{path}: x_train\[5\] contains {word}"):
        load_raw("npz", path)


def test_pickled_objects_are_refused_not_loaded(tmp_path):
    a = arrays()
    a["y_train"] = np.array([object()] * 8, dtype=object)
    path = save(tmp_path, **a)
    with pytest.raises(DataError, match=rf"{path}: cannot read it without unpickling Python objects"):
        load_raw("npz", path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), r"missing y_test \(found: x_train, y_train, x_test\)"),
        (lambda a: a.update(y_train=a["y_train"][:5]), r"y_train has shape \(5,\); it must be \(8,\)"),
        (
            lambda a: a.update(y_train=a["y_train"].astype(np.float32)),
            r"y_train has dtype float32; labels must be integer",
        ),
        (
            lambda a: a.update(x_test=a["x_test"][:, :3]),
            r"x_train examples have shape \(4, 4, 3\) but x_test examples \(3, 4, 3\)",
        ),
        (
            lambda a: a.update(x_train=a["x_train"].astype(bool)),
            r"x_train has dtype bool; it must be numeric",
        ),
        (lambda a: a.update(x_train=np.zeros(8)), r"x_train has shape \(8,\); it must be \(N, ...\)"),
    ],
)
def test_shape_and_dtype_errors_are_explained(tmp_path, change, message):
    a = arrays()
    change(a)
    with pytest.raises(DataError, match=message):
        load_raw("npz", save(tmp_path, **a))


def test_not_an_npz(tmp_path):
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match=r"one.npy: a single array, not an .npz archive"):
        load_raw("npz", single)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"junk.npz: not a readable .npz file"):
        load_raw("npz", junk)
