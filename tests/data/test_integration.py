"""The real datasets, when this machine has them: CIFAR-10 from ``$TRAINWELL_DATA``, Fashion-MNIST from Debian.

These run in the real environment (the ``isolated`` fixture leaves integration tests alone), so they use the
real cache (``$TRAINWELL_CACHE`` or the default): the first run decodes all 60,000 CIFAR-10 JPEGs once, a few
seconds, whatever ``limit_train`` says; later runs read the cached arrays.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from trainwell.data import cifar10, dataset_info, fashion_mnist, load_dataset
from trainwell.data.sources import data_roots

pytestmark = pytest.mark.integration


def test_real_cifar10_from_trainwell_data():
    if not os.environ.get("TRAINWELL_DATA"):
        pytest.skip(
            "TRAINWELL_DATA is not set; point it at a folder holding cifar10-jpeg.tar.gz or cifar-10-python.tar.gz"
        )
    copies = [root / name for root in data_roots() for name in cifar10.SEARCH_NAMES if (root / name).exists()]
    if not copies:
        pytest.skip(
            f"no CIFAR-10 copy ({', '.join(cifar10.SEARCH_NAMES)}) in TRAINWELL_DATA={os.environ['TRAINWELL_DATA']}"
        )

    info = dataset_info("cifar10")
    ds = load_dataset({"dataset": "cifar10", "validation_size": 500, "limit_train": 1000})

    assert info["path"] == str(copies[0]) and info["checksum"]["verified"] is True
    assert info["counts"] == {"train": 50000, "test": 10000}
    assert ds.classes == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    assert ds.x_train.shape == (1000, 32, 32, 3) and ds.x_valid.shape == (500, 32, 32, 3)
    assert ds.x_test.shape == (10000, 32, 32, 3) and ds.input_shape == (32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    assert ds.x_test.max() > 0.99 and ds.x_test.min() < 0.01  # scaled from the full 0..255 range
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 1000))
    # A random 1,000 of 50,000 balanced images: each class count is Binomial(1000, 0.1), std 9.5.
    assert np.all(np.abs(np.bincount(ds.y_train, minlength=10) - 100) < 50)


def test_real_fashion_mnist_from_the_debian_package():
    folder = fashion_mnist.SYSTEM_FOLDERS[0]
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent; install Debian's dataset-fashion-mnist package to run this test")

    info = dataset_info("fashion_mnist", folder)
    ds = load_dataset({"dataset": "fashion_mnist", "path": str(folder), "scaling": "none"})

    assert info["checksum"]["verified"] is True  # the uncompressed content is the published data
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 1000))
