"""The decoded-data cache: where it is, hits without decoding, keys that follow content, no partial entries."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from trainwell.data import cache_dir, imagefolder
from trainwell.data.loading import load_raw
from trainwell.errors import DataError


def tree_splits(make, n=3, seed=0):
    return {
        s: {c: list(make.pattern(n, 6, 6, 3, seed + k)) for k, c in enumerate(("a", "b"))}
        for s in ("train", "test")
    }


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = imagefolder.decode_images

    def counting(blobs, names, where):
        calls.append(len(blobs))
        return real(blobs, names, where)

    monkeypatch.setattr(imagefolder, "decode_images", counting)
    return calls


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TRAINWELL_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "trainwell"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "trainwell"


@pytest.mark.parametrize("container", ["archive", "folder"])
def test_second_load_reads_the_cache_without_decoding(make, tmp_path, count_decodes, container):
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    path = make.tar_folder(tree, tmp_path / "t.tar.gz") if container == "archive" else tree

    first = load_raw("imagefolder", path)
    second = load_raw("imagefolder", path)

    assert count_decodes == [12]  # decoded once
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert second.classes == ("a", "b") and second.format == "image folders, PNG"
    assert second.cache_entry is not None and second.cache_entry.parent == tmp_path / "cache" / "decoded"
    assert not second.cache_entry.is_relative_to(tmp_path / "tree")  # never beside the data


def test_changed_archive_content_misses_the_cache(make, tmp_path, count_decodes):
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    path = make.tar_folder(tree, tmp_path / "t.tar.gz")
    load_raw("imagefolder", path)
    make.write_tree(tmp_path / "tree", tree_splits(make, seed=9))
    make.tar_folder(tree, path)  # same name, other content
    load_raw("imagefolder", path)
    assert count_decodes == [12, 12]


def test_a_touched_file_in_a_folder_misses_the_cache(make, tmp_path, count_decodes):
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    load_raw("imagefolder", tree)
    image = tree / "train" / "a" / "0000.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_raw("imagefolder", tree)
    assert count_decodes == [12, 12]


def test_a_failed_decode_leaves_no_cache_entry(make, tmp_path):
    s = tree_splits(make)
    s["test"]["b"][2] = np.zeros((7, 6, 3), np.uint8)  # the last image decoded is the bad one
    path = make.tar_folder(make.write_tree(tmp_path / "tree", s), tmp_path / "t.tar.gz")
    with pytest.raises(DataError, match=r"test/b/0002.png: image is 6x7"):
        load_raw("imagefolder", path)
    assert make.files_under(tmp_path / "cache") == []  # no entry, and no temporary file either


def test_an_unreadable_entry_is_rebuilt(make, tmp_path, count_decodes):
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    entry = load_raw("imagefolder", tree).cache_entry
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"ignoring unreadable cache entry"):
        again = load_raw("imagefolder", tree)
    assert count_decodes == [12, 12]
    assert again.cache_entry == entry and len(again.x_train) == 6


def test_an_unwritable_cache_warns_and_still_loads(make, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TRAINWELL_CACHE", str(blocker))
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    with pytest.warns(
        UserWarning, match=r"cannot write the cache entry .*Set TRAINWELL_CACHE to a writable folder"
    ):
        raw = load_raw("imagefolder", tree)
    assert raw.cache_entry is None and len(raw.x_test) == 6


def test_a_read_only_data_folder_is_fine(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", tree_splits(make))
    for p in [tree, *tree.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(load_raw("imagefolder", tree).x_train) == 6
    finally:
        for p in [tree, *tree.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
