"""``dataset_info``: a JSON-able description of the copy that would be loaded; and the ``Dataset`` it matches."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from trainwell.data import dataset_info, load_dataset
from trainwell.errors import ConfigError


def test_info_of_an_image_folder_archive(make, tmp_path):
    s = {sp: {c: list(make.pattern(n, 5, 4, 3)) for c in ("x", "y")} for sp, n in (("train", 3), ("test", 2))}
    path = make.tar_folder(make.write_tree(tmp_path / "tree", s), tmp_path / "t.tar.gz")

    info = dataset_info("imagefolder", path)

    assert json.loads(json.dumps(info)) == info  # plain JSON types only
    assert info["name"] == "imagefolder"
    assert info["source"] == f"{path} (image folders, PNG)" and info["path"] == str(path)
    assert info["format"] == "image folders, PNG"
    assert info["classes"] == ["x", "y"] and info["num_classes"] == 2
    assert info["input_shape"] == [5, 4, 3]
    assert info["counts"] == {"train": 6, "test": 4}
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["checksum"] == {"algorithm": "sha256", "value": sha, "verified": False}
    assert info["cache_entry"].startswith(str(tmp_path / "cache" / "decoded"))


def test_info_of_fashion_mnist_lists_each_file(make, tmp_path):
    make.write_fashion(tmp_path / "fm")
    info = dataset_info("fashion_mnist", tmp_path / "fm", verify=False)
    assert sorted(info["checksum"]["value"]) == sorted(
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
    )
    assert info["checksum"]["verified"] is False and info["cache_entry"] is None
    assert info["input_shape"] == [28, 28, 1]


def test_info_errors_for_unknown_names_and_missing_paths():
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar100' \(did you mean 'cifar10'\?\)"):
        dataset_info("cifar100")
    with pytest.raises(ConfigError, match=r"data.path: dataset 'npz' needs a path"):
        dataset_info("npz")


def test_dataset_fields(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((20, 3, 3, 2)),
        y_train=np.arange(20) % 4,
        x_test=rng.random((6, 3, 3, 2)),
        y_test=np.arange(6) % 4,
    )
    ds = load_dataset({"dataset": "npz", "path": path, "validation_size": 5, "scaling": "none"})
    assert ds.name == "npz" and ds.source == f"{path} (NumPy .npz)"
    assert ds.input_shape == (3, 3, 2) and ds.num_classes == 4 and ds.classes == ("0", "1", "2", "3")
    assert (len(ds.x_train), len(ds.x_valid), len(ds.x_test)) == (15, 5, 6)
    assert all(a.dtype == np.float32 for a in (ds.x_train, ds.x_valid, ds.x_test))
    with pytest.raises(AttributeError):
        ds.name = "other"  # frozen
