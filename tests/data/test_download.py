"""Downloads from a local HTTP server: verified, all or nothing, and used as the dataset's copy."""

from __future__ import annotations

import gzip
import hashlib
import re

import numpy as np
import pytest

from trainwell.data import cifar10, fashion_mnist
from trainwell.data.checksums import KnownDigest
from trainwell.data.download import download
from trainwell.data.loading import load_raw
from trainwell.errors import DataError


def serve_official_cifar(make, tmp_path, www, url, monkeypatch, md5=None):
    arrays = make.small_cifar()
    folder = make.write_batches(tmp_path / "src" / "cifar-10-batches-py", *arrays)
    archive = make.tar_folder(folder.parent, www / "cifar-10-python.tar.gz")
    real = hashlib.md5(archive.read_bytes()).hexdigest()
    known = KnownDigest("md5", md5 or real, "the fabricated official archive")
    monkeypatch.setattr(cifar10, "URL", url + "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "OFFICIAL", known)
    monkeypatch.setattr(
        cifar10, "ARCHIVES", {"cifar-10-python.tar.gz": KnownDigest("md5", real, "fabricated")}
    )
    return arrays, real


def test_cifar10_is_downloaded_into_the_cache_when_no_copy_is_found(make, tmp_path, http_folder, monkeypatch):
    www, url = http_folder
    (x_train, *_), md5 = serve_official_cifar(make, tmp_path, www, url, monkeypatch)

    raw = load_raw("cifar10", None, verify=True)

    target = tmp_path / "cache" / "cifar-10-python.tar.gz"
    assert raw.path == target and hashlib.md5(target.read_bytes()).hexdigest() == md5
    np.testing.assert_array_equal(raw.x_train, x_train)
    assert raw.checksum.verified is True
    (www / "cifar-10-python.tar.gz").unlink()  # the next load finds the cached copy, no server needed
    assert load_raw("cifar10", None, verify=True).path == target


def test_a_download_with_the_wrong_checksum_leaves_nothing(make, tmp_path, http_folder, monkeypatch):
    www, url = http_folder
    _, real = serve_official_cifar(make, tmp_path, www, url, monkeypatch, md5="f" * 32)

    with pytest.raises(DataError) as e:
        load_raw("cifar10", None, verify=True)

    message = str(e.value)
    assert f"download of {url}cifar-10-python.tar.gz: checksum mismatch: expected MD5 {'f' * 32}" in message
    assert f"got MD5 {real}" in message and "nothing was kept" in message
    assert make.files_under(tmp_path / "cache") == []  # neither the file nor its temporary


def test_download_errors_name_the_url_and_the_fix(tmp_path, http_folder):
    _, url = http_folder
    dest = tmp_path / "cache" / "f.gz"
    # "File not found" is the reason http.server sends with its 404.
    with pytest.raises(
        DataError, match=re.escape(f"cannot download {url}missing.gz: File not found; put the file at {dest}")
    ):
        download(url + "missing.gz", dest, KnownDigest("md5", "0" * 32, "x"))
    with pytest.raises(DataError, match=r"refusing to download 'file:///etc/passwd': only http and https"):
        download("file:///etc/passwd", dest, KnownDigest("md5", "0" * 32, "x"))
    assert not dest.exists()


def test_without_a_server_the_error_says_where_it_looked(tmp_path):
    with pytest.raises(
        DataError,
        match=r"CIFAR-10 was not found \(looked for .*cifar-10-python.tar.gz.*\) and cannot download http://127.0.0.1:9/",
    ):
        load_raw("cifar10", None, verify=True)


def test_fashion_mnist_downloads_the_missing_files(make, tmp_path, http_folder, monkeypatch):
    www, url = http_folder
    arrays = make.write_fashion(www)
    table = {
        name: (
            hashlib.md5((www / f"{name}.gz").read_bytes()).hexdigest(),
            hashlib.md5(gzip.decompress((www / f"{name}.gz").read_bytes())).hexdigest(),
        )
        for name in arrays
    }
    monkeypatch.setattr(fashion_mnist, "FILES", table)
    monkeypatch.setattr(fashion_mnist, "URL", url)

    raw = load_raw("fashion_mnist", None, verify=True)

    assert raw.path == tmp_path / "cache" / "fashion-mnist"
    assert make.files_under(raw.path) == sorted(f"{n}.gz" for n in arrays)
    np.testing.assert_array_equal(raw.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    assert raw.checksum.verified is True
