"""Image-folder trees in every container (folder, .tar, .tar.gz, .zip), PNG and JPEG, and the image policy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainwell.data import images, load_dataset
from trainwell.data.loading import load_raw
from trainwell.errors import DataError

CLASSES = ("cat", "dog", "emu")  # sorted: labels 0, 1, 2


def splits(make, shape=(8, 6, 3), per_class=(3, 2)) -> dict:
    h, w, c = shape
    out, seed = {}, 0
    for split, n in zip(("train", "test"), per_class, strict=True):
        out[split] = {}
        for cls in CLASSES:
            out[split][cls] = list(make.pattern(n, h, w, c, seed))
            seed += 1
    return out


def containers(make, tree: Path, tmp_path: Path) -> dict[str, Path]:
    return {
        "folder": tree,
        "tar": make.tar_folder(tree, tmp_path / "tree.tar", mode="w"),
        "tar.gz": make.tar_folder(tree, tmp_path / "tree.tar.gz", mode="w:gz"),
        "tgz": make.tar_folder(tree, tmp_path / "tree.tgz", mode="w:gz"),
        "zip": make.zip_folder(tree, tmp_path / "tree.zip"),
    }


@pytest.mark.parametrize("container", ["folder", "tar", "tar.gz", "tgz", "zip"])
def test_png_tree_in_every_container_gives_exact_pixels_and_sorted_classes(make, tmp_path, container):
    s = splits(make)
    path = containers(make, make.write_tree(tmp_path / "tree", s), tmp_path)[container]

    raw = load_raw("imagefolder", path)

    assert raw.classes == CLASSES
    expected_x = np.stack([img for cls in CLASSES for img in s["train"][cls]])  # name order
    expected_y = np.repeat(np.arange(3), 3)
    np.testing.assert_array_equal(raw.x_train, expected_x)
    np.testing.assert_array_equal(raw.y_train, expected_y)
    np.testing.assert_array_equal(raw.x_test, np.stack([img for cls in CLASSES for img in s["test"][cls]]))
    np.testing.assert_array_equal(raw.y_test, np.repeat(np.arange(3), 2))
    assert raw.format == "image folders, PNG"
    assert raw.source == f"{path} (image folders, PNG)"


@pytest.mark.parametrize("container", ["folder", "tar.gz", "zip"])
def test_jpeg_tree_decodes_as_pillow_does(make, tmp_path, container):
    tree = make.write_tree(tmp_path / "tree", splits(make, shape=(16, 16, 3)), fmt="JPEG")
    path = containers(make, tree, tmp_path)[container]

    raw = load_raw("imagefolder", path)

    # JPEG is lossy, so the expected pixels are Pillow's decoding of each file, read here independently.
    first = np.asarray(Image.open(tree / "train" / "cat" / "0000.jpg"))
    last = np.asarray(Image.open(tree / "test" / "emu" / "0001.jpg"))
    np.testing.assert_array_equal(raw.x_train[0], first)
    np.testing.assert_array_equal(raw.x_test[-1], last)
    assert raw.format == "image folders, JPEG"


def test_grey_images_have_one_channel(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", splits(make, shape=(5, 7, 1)))
    ds = load_dataset({"dataset": "imagefolder", "path": str(tree), "scaling": "none"})
    assert ds.input_shape == (5, 7, 1)
    assert ds.num_classes == 3


def test_tree_under_one_top_folder_and_dot_slash_names(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", splits(make))
    nested = make.tar_folder(tree, tmp_path / "nested.tar.gz", arcname="mydata/")
    dotted = make.tar_folder(tree, tmp_path / "dotted.tar", mode="w", arcname="./")
    reference = load_raw("imagefolder", tree)
    for path in (nested, dotted):
        raw = load_raw("imagefolder", path)
        np.testing.assert_array_equal(raw.x_train, reference.x_train)
        assert raw.classes == CLASSES


def test_hidden_and_non_image_files_are_ignored(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", splits(make))
    (tree / "train" / "cat" / "._0000.png").write_bytes(b"macOS resource fork, not an image")
    (tree / "train" / "cat" / "notes.txt").write_text("not an image")
    (tree / "train" / ".hidden").mkdir()
    (tree / "train" / ".hidden" / "x.png").write_bytes(make.png_bytes(np.zeros((1, 1, 3), np.uint8)))
    raw = load_raw("imagefolder", tree)
    assert len(raw.x_train) == 9 and raw.classes == CLASSES


def test_an_image_of_another_size_is_refused_naming_both_files(make, tmp_path):
    s = splits(make)
    s["train"]["dog"][1] = np.zeros((9, 6, 3), np.uint8)
    tree = make.write_tree(tmp_path / "tree", s)
    with pytest.raises(
        DataError, match=r"train/dog/0001.png: image is 6x9 but the first image \(train/cat/0000.png\) is 6x8"
    ):
        load_raw("imagefolder", tree)


def test_mixed_grey_and_colour_images_are_refused(make, tmp_path):
    s = splits(make)
    s["test"]["emu"][0] = np.zeros((8, 6, 1), np.uint8)
    tree = make.write_tree(tmp_path / "tree", s)
    with pytest.raises(
        DataError, match=r"test/emu/0000.png: image mode 'L' differs from the first image's .*'RGB'"
    ):
        load_raw("imagefolder", tree)


def test_palette_images_are_refused_with_the_fix(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", splits(make))
    first = tree / "train" / "cat" / "0000.png"
    Image.open(first).convert("P").save(first)
    with pytest.raises(
        DataError, match=r"train/cat/0000.png: image mode 'P' is not supported; convert .*'RGB'"
    ):
        load_raw("imagefolder", tree)


def test_a_damaged_image_is_named(make, tmp_path):
    tree = make.write_tree(tmp_path / "tree", splits(make))
    (tree / "test" / "dog" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match=r"test/dog/0001.png: not a readable PNG or JPEG image"):
        load_raw("imagefolder", tree)


def test_test_classes_must_exist_in_train(make, tmp_path):
    s = splits(make)
    s["test"]["yak"] = s["test"]["cat"]
    tree = make.write_tree(tmp_path / "tree", s)
    with pytest.raises(DataError, match=r"test/ has class folders that train/ lacks: yak"):
        load_raw("imagefolder", tree)


def test_missing_test_split_and_missing_layout(make, tmp_path):
    s = splits(make)
    del s["test"]
    tree = make.write_tree(tmp_path / "tree", s)
    with pytest.raises(DataError, match=r"no images under test/<class>/"):
        load_raw("imagefolder", tree)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(make.png_bytes(np.zeros((2, 2, 3), np.uint8)))
    with pytest.raises(DataError, match=r"no train/ and test/ folders found; expected train/<class>/<image>"):
        load_raw("imagefolder", tmp_path / "flat")


def test_imagefolder_needs_a_path():
    from trainwell.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.path: dataset 'imagefolder' needs a path"):
        load_dataset({"dataset": "imagefolder"})


def test_parallel_decoding_matches_serial_and_reports_bad_files(make, tmp_path, monkeypatch):
    s = splits(make, per_class=(7, 4))
    tree = make.write_tree(tmp_path / "tree", s)
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.png"))
    blobs = [(tree / n).read_bytes() for n in files]
    serial, _ = images.decode_images(blobs, files, tree)

    monkeypatch.setattr(images, "PARALLEL_MIN", 1)
    monkeypatch.setattr(images, "_CHUNK", 4)  # 33 images: nine tasks over two worker processes
    parallel, formats = images.decode_images(blobs, files, tree)
    np.testing.assert_array_equal(parallel, serial)
    assert formats == {"PNG"}

    buf = io.BytesIO()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(buf, format="PNG")
    blobs[20] = buf.getvalue()
    with pytest.raises(DataError, match=f"{files[20]}: image is 3x3"):
        images.decode_images(blobs, files, tree)
