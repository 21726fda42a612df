"""Bad data: missing files, a wrong checksum, truncated archives, path-traversal members, images of the wrong
size or mode, labels out of range, NaN or inf in an ``.npz``. Each gives exit code 2 and a message naming the
file and the fix, and leaves nothing behind: no run folder, no cache entry, no temporary file, nothing written
outside the data.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.reliability.conftest import blobs_npz, config_dict, files_under, leftovers, write_config
from trainwell.cli import main
from trainwell.data import load_dataset

SIDE = 6
CLASSES = ("a", "b", "c")


def png(seed: int, size: tuple[int, int] = (SIDE, SIDE), mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], len(mode)), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def tree() -> dict[str, bytes]:
    """A valid image-folder tree: train/<class>/ and test/<class>/, 6x6 RGB PNGs."""
    files, seed = {}, 0
    for split, count in (("train", 6), ("test", 2)):
        for cls in CLASSES:
            for i in range(count):
                files[f"{split}/{cls}/{i}.png"] = png(seed)
                seed += 1
    return files


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def npz_with(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> Path:
    blobs_npz(path)
    with np.load(path) as z:
        arrays = dict(z)
    change(arrays)
    np.savez(path, **arrays)
    return path


def nan_at(arrays: dict[str, np.ndarray]) -> None:
    arrays["x_train"][17, 2, 3, 1] = np.nan


def inf_at(arrays: dict[str, np.ndarray]) -> None:
    arrays["x_test"][5, 0, 0, 0] = -np.inf


def label_out_of_range(arrays: dict[str, np.ndarray]) -> None:
    arrays["classes"] = np.array(["a", "b", "c"])
    arrays["y_train"][42] = 3


def negative_label(arrays: dict[str, np.ndarray]) -> None:
    arrays["y_test"][7] = -1


def short_labels(arrays: dict[str, np.ndarray]) -> None:
    arrays["y_train"] = arrays["y_train"][:-1]


# Each case: (makes the data under `data`, returns the [data] table, and the message's expected parts)
def case_missing_npz(data: Path) -> tuple[dict, list[str]]:
    return {"dataset": "npz", "path": str(data / "nope.npz")}, [
        f"{data / 'nope.npz'} does not exist",
        "check data.path",
    ]


def npz_case(change: Callable, *message: str) -> Callable[[Path], tuple[dict, list[str]]]:
    def case(data: Path) -> tuple[dict, list[str]]:
        path = npz_with(data / "blobs.npz", change)
        return {"dataset": "npz", "path": str(path)}, [str(path), *message]

    return case


def case_wrong_checksum(data: Path) -> tuple[dict, list[str]]:
    path = data / "cifar-10-python.tar.gz"
    path.write_bytes(b"not the real archive" * 100)
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    return {"dataset": "cifar10"}, [
        f"{path}: checksum mismatch",
        "expected MD5 c58f30108f718f92721af3b95e74349a",
        f"got MD5 {actual}",
        "fetch it again, or set verify = false",
    ]


def case_truncated_tar(data: Path) -> tuple[dict, list[str]]:
    path = write_tar(data / "tree.tar.gz", tree())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return {"dataset": "imagefolder", "path": str(path)}, [str(path), "truncated or corrupt"]


def case_truncated_idx(data: Path) -> tuple[dict, list[str]]:
    folder = data / "fashion-mnist"
    folder.mkdir()
    sizes = {
        "train-images-idx3-ubyte": (3, 20),
        "train-labels-idx1-ubyte": (1, 20),
        "t10k-images-idx3-ubyte": (3, 5),
        "t10k-labels-idx1-ubyte": (1, 5),
    }
    for name, (ndim, n) in sizes.items():  # the IDX layout: magic 0x000008<ndim>, big-endian sizes, bytes
        dims = (n, 28, 28)[:ndim]
        header = bytes([0, 0, 8, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
        (folder / name).write_bytes(header + bytes(int(np.prod(dims))))
    victim = folder / "train-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-100])
    return (
        {"dataset": "fashion_mnist", "path": str(folder), "verify": False},
        [str(victim), "the file has", "truncated or corrupt, fetch it again"],
    )


def case_traversal_tar(data: Path) -> tuple[dict, list[str]]:
    path = write_tar(data / "evil.tar.gz", {**tree(), "../evil.png": png(99)})
    return (
        {"dataset": "imagefolder", "path": str(path)},
        [str(path), "refusing member '../evil.png'", "points outside the archive", "nothing was extracted"],
    )


def case_absolute_zip(data: Path) -> tuple[dict, list[str]]:
    path = data / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in tree().items():
            zf.writestr(name, blob)
        zf.writestr("/tmp/evil.png", png(99))
    return {"dataset": "imagefolder", "path": str(path)}, [
        str(path),
        "refusing member '/tmp/evil.png'",
        "an absolute path",
    ]


def case_wrong_size(data: Path) -> tuple[dict, list[str]]:
    root = write_folder(data / "tree", {**tree(), "train/b/3.png": png(7, size=(SIDE, SIDE + 1))})
    return (
        {"dataset": "imagefolder", "path": str(root)},
        [str(root), "train/b/3.png: image is 6x7 but the first image", "resize them first"],
    )


def case_wrong_mode(data: Path) -> tuple[dict, list[str]]:
    root = write_folder(data / "tree", {**tree(), "test/c/1.png": png(7, mode="RGBA")})
    return (
        {"dataset": "imagefolder", "path": str(root)},
        [str(root), "test/c/1.png: image mode 'RGBA' differs from the first image's", "convert all images"],
    )


def case_not_an_image(data: Path) -> tuple[dict, list[str]]:
    root = write_folder(data / "tree", {**tree(), "train/a/2.png": b"\x89PNG\r\n\x1a\n truncated"})
    return {"dataset": "imagefolder", "path": str(root)}, [
        str(root),
        "train/a/2.png: not a readable PNG or JPEG",
    ]


CASES = {
    "missing file": case_missing_npz,
    "wrong checksum": case_wrong_checksum,
    "truncated tar.gz": case_truncated_tar,
    "truncated IDX file": case_truncated_idx,
    "path traversal (tar)": case_traversal_tar,
    "absolute member (zip)": case_absolute_zip,
    "image of the wrong size": case_wrong_size,
    "image of the wrong mode": case_wrong_mode,
    "damaged image": case_not_an_image,
    "label out of range": npz_case(label_out_of_range, "y_train[42] = 3 is not a class index 0..2"),
    "negative label": npz_case(negative_label, "y_test[7] = -1 is not a class index"),
    "labels and examples differ in number": npz_case(short_labels, "one label per row of x_train"),
    "NaN in x": npz_case(nan_at, "x_train[17] contains NaN"),
    "inf in x": npz_case(inf_at, "x_test[5] contains inf"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_data_exit_2_clear_message_nothing_left(tmp_path, capsys, case):
    data_dir = tmp_path / "data"
    table, message = case(data_dir)
    config = write_config(
        tmp_path / "c.toml", {**config_dict(tmp_path / "unused.npz"), "data": {"validation_size": 2, **table}}
    )
    data_files = set(files_under(tmp_path))

    assert main(["train", str(config), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    for part in message:
        assert part in err
    assert "Traceback" not in err
    assert (
        sorted(set(files_under(tmp_path)) - data_files) == []
    )  # no run folder, no cache entry, no temp file
    assert (
        not leftovers(tmp_path)
        and not (tmp_path / "evil.png").exists()
        and not Path("/tmp/evil.png").exists()
    )


def test_the_same_data_without_its_defect_loads(tmp_path):
    """The makers above build valid data unless told to break it, so each case fails for its defect alone."""
    tar = write_tar(tmp_path / "tree.tar.gz", tree())
    folder = write_folder(tmp_path / "tree", tree())
    for path in (tar, folder):
        loaded = load_dataset({"dataset": "imagefolder", "path": path, "scaling": "none"})
        assert loaded.x_train.shape == (18, SIDE, SIDE, 3) and loaded.classes == CLASSES
    assert len(load_dataset({"dataset": "npz", "path": blobs_npz(tmp_path / "ok.npz")}).x_train) == 2600
    assert files_under(tmp_path / "cache")  # a good tree is cached, so an empty cache above means something
