"""CIFAR-10: the official python batches (archive and folder), image folders, search order, verification."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainwell.data import cifar10, load_dataset
from trainwell.data.checksums import KnownDigest
from trainwell.data.loading import load_raw
from trainwell.errors import DataError


def official_archive(
    make, tmp_path: Path, name: str = "cifar-10-python.tar.gz", **kwargs
) -> tuple[Path, tuple]:
    arrays = make.small_cifar(**kwargs)
    folder = make.write_batches(tmp_path / "src" / "cifar-10-batches-py", *arrays)
    return make.tar_folder(folder.parent, tmp_path / name), arrays


def trust(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``path`` a known archive, as if its digest were published."""
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    known = KnownDigest("md5", md5, "the fabricated official archive")
    monkeypatch.setattr(cifar10, "ARCHIVES", {"cifar-10-python.tar.gz": known})


def test_batch_rows_are_channel_planar_and_become_hwc_pixels(make, tmp_path, monkeypatch):
    # One image whose planes are different, known functions of (i, j): a transposed or channel-swapped
    # reading gets a different value at almost every (i, j).
    def value(c: int, i: int, j: int) -> int:
        return (37 * c + 5 * i + 11 * j) % 256

    row = np.empty(3072, dtype=np.uint8)
    for c in range(3):
        for i in range(32):
            for j in range(32):
                row[c * 1024 + i * 32 + j] = value(c, i, j)  # the layout the CIFAR-10 page describes
    folder = tmp_path / "cifar-10-batches-py"
    make.write_batches(folder, *make.small_cifar(n_train=5, n_test=1))
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    batch[b"data"][0] = row
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))

    raw = load_raw("cifar10", folder, verify=False)

    for i, j in [(0, 0), (0, 31), (31, 0), (5, 17), (31, 31)]:
        assert tuple(raw.x_train[0, i, j]) == (value(0, i, j), value(1, i, j), value(2, i, j))
    assert raw.x_train.shape == (5, 32, 32, 3) and raw.x_train.dtype == np.uint8


@pytest.mark.parametrize("protocol", [2, 5])
def test_official_archive_and_its_extracted_folder_give_the_same_data(make, tmp_path, monkeypatch, protocol):
    arrays = make.small_cifar(n_train=25, n_test=10)
    folder = make.write_batches(tmp_path / "src" / "cifar-10-batches-py", *arrays, protocol=protocol)
    archive = make.tar_folder(folder.parent, tmp_path / "cifar-10-python.tar.gz")
    x_train, y_train, x_test, y_test = arrays

    from_archive = load_raw("cifar10", archive, verify=False)
    from_folder = load_raw("cifar10", folder, verify=False)
    from_parent = load_raw("cifar10", folder.parent, verify=False)  # the folder holding cifar-10-batches-py/

    for raw in (from_archive, from_folder, from_parent):
        np.testing.assert_array_equal(raw.x_train, x_train)  # batches 1..5 in order are the training set
        np.testing.assert_array_equal(raw.y_train, y_train)
        np.testing.assert_array_equal(raw.x_test, x_test)
        np.testing.assert_array_equal(raw.y_test, y_test)
        assert raw.classes == cifar10.CLASSES
        assert raw.y_train.dtype == np.int64
    assert from_archive.source == f"{archive} (CIFAR-10 python batches)"


def test_image_folder_copy_uses_the_official_label_order(make, tmp_path):
    rng = np.random.default_rng(1)
    splits = {
        split: {
            cls: [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
            for cls in cifar10.CLASSES
        }
        for split in ("train", "test")
    }
    archive = make.tar_folder(make.write_tree(tmp_path / "tree", splits), tmp_path / "mine.tar.gz")

    raw = load_raw("cifar10", archive, verify=False)

    assert raw.classes == cifar10.CLASSES
    assert raw.format == "image folders, PNG"
    for k, cls in enumerate(cifar10.CLASSES):  # name order: each class's two images, classes in sorted order
        np.testing.assert_array_equal(raw.x_train[2 * k], splits["train"][cls][0])
        assert raw.y_train[2 * k] == cifar10.CLASSES.index(cls)


def test_image_folders_with_other_class_names_are_refused(make, tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    tree = make.write_tree(tmp_path / "tree", {s: {"cat": [img], "dog": [img]} for s in ("train", "test")})
    with pytest.raises(
        DataError, match=r"class folders are \['cat', 'dog'\]; CIFAR-10's are .*'imagefolder'"
    ):
        load_raw("cifar10", tree, verify=False)


def test_unknown_archive_is_refused_naming_file_expected_and_actual(make, tmp_path):
    archive, _ = official_archive(make, tmp_path)
    data = archive.read_bytes()
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()

    with pytest.raises(DataError) as e:
        load_dataset({"dataset": "cifar10", "path": str(archive)})

    message = str(e.value)
    assert message.startswith(f"{archive}: checksum mismatch")
    assert f"expected MD5 {cifar10.OFFICIAL.value}" in message  # the file's name says which copy it claims
    assert cifar10.JPEG.value not in message
    assert f"got MD5 {md5}" in message and sha not in message
    assert "verify = false" in message


def test_archive_with_another_name_is_checked_against_every_known_copy(make, tmp_path):
    archive, _ = official_archive(make, tmp_path, name="renamed.tar.gz")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(
        DataError,
        match=f"expected MD5 {cifar10.OFFICIAL.value} .* or SHA-256 {cifar10.JPEG.value}.*SHA-256 {sha}",
    ):
        load_raw("cifar10", archive, verify=True)


def test_verify_false_reads_an_unknown_archive_and_says_it_is_unverified(make, tmp_path):
    archive, (x_train, *_) = official_archive(make, tmp_path)
    raw = load_raw("cifar10", archive, verify=False)
    np.testing.assert_array_equal(raw.x_train, x_train)
    assert raw.checksum.verified is False
    assert raw.checksum.algorithm == "sha256"
    assert raw.checksum.value == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_a_known_archive_is_verified(make, tmp_path, monkeypatch):
    archive, _ = official_archive(make, tmp_path)
    trust(monkeypatch, archive)
    raw = load_raw("cifar10", archive, verify=True)
    assert raw.checksum.verified is True
    assert raw.checksum.algorithm == "md5"
    assert raw.checksum.value == hashlib.md5(archive.read_bytes()).hexdigest()


def test_batches_folder_is_verified_file_by_file(make, tmp_path, monkeypatch):
    folder = make.write_batches(tmp_path / "cifar-10-batches-py", *make.small_cifar())
    published = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in cifar10.BATCH_MD5}
    monkeypatch.setattr(cifar10, "BATCH_MD5", published)

    assert load_raw("cifar10", folder, verify=True).checksum.verified is True

    monkeypatch.setattr(cifar10, "BATCH_MD5", {**published, "test_batch": "0" * 32})
    # The cached entry records the files' digests; the published table is compared with them on every load.
    with pytest.raises(
        DataError, match=re.escape(f"{folder / 'test_batch'}: checksum mismatch: expected MD5 {'0' * 32}")
    ):
        load_raw("cifar10", folder, verify=True)
    assert load_raw("cifar10", folder, verify=False).checksum.verified is False


def test_a_changed_image_folder_copy_fails_its_tree_digest(make, tmp_path, monkeypatch):
    img = np.zeros((32, 32, 3), np.uint8)
    tree = make.write_tree(
        tmp_path / "cifar10", {s: {c: [img] for c in cifar10.CLASSES} for s in ("train", "test")}
    )
    listing = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(tree).as_posix()}\n"
        for p in sorted(tree.rglob("*.png"), key=lambda p: p.relative_to(tree).as_posix())
    )  # the `find train test -type f | LC_ALL=C sort | xargs sha256sum` listing
    digest = hashlib.sha256(listing.encode()).hexdigest()
    monkeypatch.setattr(cifar10, "JPEG_TREE", KnownDigest("sha256-tree", digest, "the fabricated tree"))

    assert load_raw("cifar10", tree, verify=True).checksum.verified is True

    (tree / "test" / "truck" / "0000.png").write_bytes(make.png_bytes(img + 1))
    with pytest.raises(DataError, match=f"{tree}: checksum mismatch: expected SHA-256 tree digest {digest}"):
        load_raw("cifar10", tree, verify=True)


def test_search_order_prefers_the_official_archive_in_trainwell_data(make, tmp_path, monkeypatch):
    data = tmp_path / "data"
    archive, (x_official, *_) = official_archive(make, tmp_path, seed=0)
    shutil.copy(archive, data / "cifar-10-python.tar.gz")
    make.write_batches(data / "cifar-10-batches-py", *make.small_cifar(seed=5))
    trust(monkeypatch, data / "cifar-10-python.tar.gz")

    raw = load_raw("cifar10", None, verify=True)

    assert raw.path == data / "cifar-10-python.tar.gz"
    np.testing.assert_array_equal(raw.x_train, x_official)
    os.remove(data / "cifar-10-python.tar.gz")
    assert load_raw("cifar10", None, verify=False).path == data / "cifar-10-batches-py"


def test_a_pickle_that_would_run_code_is_refused(make, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = make.write_batches(tmp_path / "cifar-10-batches-py", *make.small_cifar())
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))

    with pytest.raises(
        DataError, match=r"data_batch_3 is not a readable CIFAR-10 batch \(refusing to load posix.system"
    ):
        load_raw("cifar10", folder, verify=False)
    assert not marker.exists()


def test_batches_with_bad_labels_or_shapes_are_refused(make, tmp_path):
    folder = make.write_batches(tmp_path / "cifar-10-batches-py", *make.small_cifar())
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch[b"labels"][3] = 10
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: label 10 at row 3 is not a class index 0..9"):
        load_raw("cifar10", folder, verify=False)

    batch[b"labels"][3] = 1
    batch[b"data"] = batch[b"data"][:, :3000]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(
        DataError, match=r"test_batch: 'data' must be uint8 rows of 3072 values, got uint8 \(10, 3000\)"
    ):
        load_raw("cifar10", folder, verify=False)


def test_missing_batch_file_is_named(make, tmp_path):
    folder = make.write_batches(tmp_path / "cifar-10-batches-py", *make.small_cifar())
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"missing data_batch_4"):
        load_raw("cifar10", folder, verify=False)
