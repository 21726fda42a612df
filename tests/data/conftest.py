"""Fixtures for the data tests: an isolated environment, and makers of small datasets in every format.

Every test runs with ``TRAINWELL_DATA`` and ``TRAINWELL_CACHE`` pointing into its own ``tmp_path``, with the
system Fashion-MNIST folder hidden and the download URLs pointing at a closed local port, so no test reads the
user's cache, finds the machine's datasets or reaches the network by accident. The makers write the formats
from their published descriptions, not through trainwell's readers.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainwell.data import cifar10, fashion_mnist

REAL_ENV = dict(os.environ)  # as it was before any fixture ran: the integration tests use the real cache
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLOSED_PORT_URL = "http://127.0.0.1:9/"  # the discard port: nothing listens, so a stray download fails fast


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration"):
        return
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("TRAINWELL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDERS", ())
    monkeypatch.setattr(fashion_mnist, "URL", CLOSED_PORT_URL)
    monkeypatch.setattr(cifar10, "URL", CLOSED_PORT_URL + "cifar-10-python.tar.gz")


class Make:
    """The makers, as one fixture (``make``) so that tests need not import from a conftest."""

    # ---------------------------------------------------------------- pixels

    @staticmethod
    def pattern(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
        """``n`` distinct uint8 images: random, with image ``k``'s first pixel set to ``k`` to tell them apart."""
        x = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
        x[:, 0, 0, 0] = np.arange(n) % 256
        return x

    # ---------------------------------------------------------------- CIFAR-10 python batches

    @staticmethod
    def planar_rows(x: np.ndarray) -> np.ndarray:
        """Rows as the CIFAR-10 page describes them: 1024 red values, 1024 green, 1024 blue, each row-major."""
        n = len(x)
        return np.concatenate(
            [x[..., 0].reshape(n, 1024), x[..., 1].reshape(n, 1024), x[..., 2].reshape(n, 1024)], axis=1
        )

    @staticmethod
    def write_batches(
        folder: Path,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        classes: tuple[str, ...] = CIFAR_CLASSES,
        protocol: int = 2,
    ) -> Path:
        """Write the official ``cifar-10-batches-py`` files: five training batches, a test batch, the meta."""
        folder.mkdir(parents=True, exist_ok=True)
        parts = np.array_split(np.arange(len(x_train)), 5)
        for k, idx in enumerate(parts, start=1):
            batch = {
                b"batch_label": f"training batch {k} of 5".encode(),
                b"labels": [int(v) for v in y_train[idx]],
                b"data": Make.planar_rows(x_train[idx]),
                b"filenames": [f"img_{i}.png".encode() for i in idx],
            }
            (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch, protocol=protocol))
        test = {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in y_test],
            b"data": Make.planar_rows(x_test),
        }
        (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
        meta = {
            b"label_names": [c.encode() for c in classes],
            b"num_cases_per_batch": 10000,
            b"num_vis": 3072,
        }
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
        (folder / "readme.html").write_text("<p>fabricated</p>")
        return folder

    @staticmethod
    def small_cifar(n_train: int = 20, n_test: int = 10, seed: int = 0) -> tuple[np.ndarray, ...]:
        x_train, x_test = Make.pattern(n_train, 32, 32, 3, seed), Make.pattern(n_test, 32, 32, 3, seed + 1)
        y_train, y_test = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
        return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)

    # ---------------------------------------------------------------- image folders

    @staticmethod
    def write_tree(root: Path, splits: dict[str, dict[str, list[np.ndarray]]], fmt: str = "PNG") -> Path:
        """``root/<split>/<class>/<k>.<ext>`` for each image (uint8 ``(H, W, C)``, C = 1 or 3)."""
        ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
        for split, classes in splits.items():
            for cls, images in classes.items():
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                for k, img in enumerate(images):
                    arr = img[..., 0] if img.shape[-1] == 1 else img
                    Image.fromarray(arr).save(root / split / cls / f"{k:04d}.{ext}", format=fmt)
        return root

    @staticmethod
    def tar_folder(src: Path, out: Path, mode: str = "w:gz", arcname: str = "") -> Path:
        with tarfile.open(out, mode) as tar:
            for path in sorted(src.rglob("*")):
                tar.add(path, arcname=f"{arcname}{path.relative_to(src).as_posix()}", recursive=False)
        return out

    @staticmethod
    def zip_folder(src: Path, out: Path) -> Path:
        with zipfile.ZipFile(out, "w") as zf:
            for path in sorted(src.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(src).as_posix())
        return out

    @staticmethod
    def tar_with(out: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
        """A tar holding exactly ``members`` (info and content), for archives no honest tool would make."""
        with tarfile.open(out, mode) as tar:
            for info, data in members:
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out

    @staticmethod
    def png_bytes(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    # ---------------------------------------------------------------- IDX (Fashion-MNIST)

    @staticmethod
    def idx_bytes(array: np.ndarray) -> bytes:
        """IDX as LeCun's MNIST page describes it: 0, 0, type 0x08 (ubyte), ndim, big-endian uint32 sizes, data."""
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
        return header + array.astype(np.uint8).tobytes()

    @staticmethod
    def write_fashion(
        folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0
    ) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "train-images-idx3-ubyte": Make.pattern(n_train, 28, 28, 1, seed)[..., 0],
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": Make.pattern(n_test, 28, 28, 1, seed + 1)[..., 0],
            "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 7) % 10).astype(np.uint8),
        }
        for name, array in arrays.items():
            data = Make.idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        return arrays

    @staticmethod
    def files_under(folder: Path) -> list[str]:
        """Every file below ``folder`` (hidden temporary files included), as sorted relative names."""
        if not folder.exists():
            return []
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def make() -> type[Make]:
    return Make


# ---------------------------------------------------------------- a local web server


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 from a thread: ``(folder, base URL)``."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
