"""Fashion-MNIST: IDX files gzipped or not, header checks, content verification, search order."""

from __future__ import annotations

import gzip
import hashlib
import re

import numpy as np
import pytest

from trainwell.data import fashion_mnist, load_dataset
from trainwell.data.loading import load_raw
from trainwell.errors import DataError


def trust(monkeypatch, arrays: dict, make) -> None:
    """Publish the fabricated files' content MD5s, as if they were the official ones."""
    table = {name: ("0" * 32, hashlib.md5(make.idx_bytes(a)).hexdigest()) for name, a in arrays.items()}
    monkeypatch.setattr(fashion_mnist, "FILES", table)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_give_images_with_one_channel(make, tmp_path, gz):
    arrays = make.write_fashion(tmp_path / "fm", gz=gz)
    raw = load_raw("fashion_mnist", tmp_path / "fm", verify=False)
    np.testing.assert_array_equal(raw.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert raw.x_train.shape == (12, 28, 28, 1) and raw.y_train.dtype == np.int64
    assert raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot"
    assert raw.format == ("Fashion-MNIST IDX files, gzip" if gz else "Fashion-MNIST IDX files")


def test_content_md5_verifies_gzipped_and_plain_copies_alike(make, tmp_path, monkeypatch):
    arrays = make.write_fashion(tmp_path / "gz", gz=True)
    make.write_fashion(tmp_path / "plain", gz=False)
    trust(monkeypatch, arrays, make)
    for folder in ("gz", "plain"):
        checksum = load_raw("fashion_mnist", tmp_path / folder, verify=True).checksum
        assert checksum.verified is True
        assert (
            checksum.value["train-labels-idx1-ubyte"]
            == hashlib.md5(make.idx_bytes(arrays["train-labels-idx1-ubyte"])).hexdigest()
        )


def test_a_file_with_other_content_is_refused_naming_file_expected_and_actual(make, tmp_path):
    arrays = make.write_fashion(tmp_path / "fm")
    actual = hashlib.md5(make.idx_bytes(arrays["train-images-idx3-ubyte"])).hexdigest()
    expected = fashion_mnist.FILES["train-images-idx3-ubyte"][1]
    file = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    with pytest.raises(
        DataError,
        match=re.escape(f"{file}: checksum mismatch: expected MD5 {expected}") + f".*got MD5 {actual}",
    ):
        load_dataset({"dataset": "fashion_mnist", "path": str(tmp_path / "fm")})
    assert load_raw("fashion_mnist", tmp_path / "fm", verify=False).checksum.verified is False


def test_bad_magic_number_is_explained(make, tmp_path):
    make.write_fashion(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])  # claims 3 dims: an images header
    with pytest.raises(
        DataError,
        match=rf"{path}: not an IDX file of 1-d unsigned bytes \(magic number 0x00000803, expected 0x00000801\)",
    ):
        load_raw("fashion_mnist", tmp_path / "fm", verify=False)


def test_truncated_idx_and_truncated_gzip_are_named(make, tmp_path):
    make.write_fashion(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        DataError,
        match=rf"{path}: its header promises 12 x 28 x 28 values \(9,424 bytes in all\) but the file has 9,324 bytes",
    ):
        load_raw("fashion_mnist", tmp_path / "fm", verify=False)

    make.write_fashion(tmp_path / "fz", gz=True)
    gz = tmp_path / "fz" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-50])
    with pytest.raises(DataError, match=rf"{gz}: not a valid gzip file, or truncated"):
        load_raw("fashion_mnist", tmp_path / "fz", verify=False)


def test_images_and_labels_must_agree_in_count(make, tmp_path):
    make.write_fashion(tmp_path / "fm", gz=False)
    (tmp_path / "fm" / "train-labels-idx1-ubyte").write_bytes(make.idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte has 12 images but train-labels-idx1-ubyte has 11 labels"
    ):
        load_raw("fashion_mnist", tmp_path / "fm", verify=False)


def test_missing_files_in_an_explicit_folder_are_listed(make, tmp_path):
    make.write_fashion(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"fm: missing t10k-labels-idx1-ubyte \(or the same with .gz\)"):
        load_raw("fashion_mnist", tmp_path / "fm", verify=False)


def test_search_order_trainwell_data_subfolder_then_system_folder(make, tmp_path, monkeypatch):
    system = tmp_path / "system"
    make.write_fashion(system, seed=1)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDERS", (system,))
    assert load_raw("fashion_mnist", None, verify=False).path == system

    make.write_fashion(tmp_path / "data" / "fashion-mnist", seed=2)
    assert load_raw("fashion_mnist", None, verify=False).path == tmp_path / "data" / "fashion-mnist"


def test_debian_style_regzipped_file_still_verifies(make, tmp_path, monkeypatch):
    # The same IDX bytes compressed with another header (no file name, another time): other .gz bytes,
    # same content, so the content MD5 still matches.
    arrays = make.write_fashion(tmp_path / "fm")
    trust(monkeypatch, arrays, make)
    path = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    before = path.read_bytes()
    path.write_bytes(gzip.compress(gzip.decompress(before), mtime=1591347949))
    assert path.read_bytes() != before
    assert load_raw("fashion_mnist", tmp_path / "fm", verify=True).checksum.verified is True
