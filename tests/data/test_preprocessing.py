"""Validation split, limits and scaling, checked against hand computations on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.data import DataSpec, load_dataset
from trainwell.data.dataset import RawDataset
from trainwell.data.preprocessing import fit_standardization, split_and_scale, validation_count
from trainwell.errors import ConfigError


def raw(n_train=100, n_test=40, shape=(2, 3, 1)) -> RawDataset:
    # Example k of the training set has every pixel equal to k % 251 (uint8, < 256), and label k % 10, so an
    # example can be traced back to its index.
    x_train = np.broadcast_to(
        (np.arange(n_train) % 251).astype(np.uint8)[:, None, None, None], (n_train, *shape)
    ).copy()
    x_test = np.broadcast_to(
        (np.arange(n_test) % 251).astype(np.uint8)[:, None, None, None], (n_test, *shape)
    ).copy()
    return RawDataset(
        name="toy",
        x_train=x_train,
        y_train=np.arange(n_train, dtype=np.int64) % 10,
        x_test=x_test,
        y_test=np.arange(n_test, dtype=np.int64) % 10,
        classes=tuple(str(i) for i in range(10)),
        path="toy",
        format="fabricated",
    )


def spec(**kw) -> DataSpec:
    return DataSpec(dataset="npz", path="toy.npz", **kw)


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(int)


def test_validation_split_is_a_seeded_shuffle_of_the_training_set():
    ds = split_and_scale(raw(), spec(validation_size=30, scaling="none", seed=7))
    order = np.random.default_rng(7).permutation(100)  # the documented procedure, replayed
    np.testing.assert_array_equal(ids(ds.x_valid), order[:30])
    np.testing.assert_array_equal(ids(ds.x_train), order[30:])
    np.testing.assert_array_equal(ds.y_valid, order[:30] % 10)  # labels travel with their images
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ids(ds.x_test), np.arange(40))  # the test set keeps its order


def test_fraction_is_rounded_and_different_seeds_differ():
    assert validation_count(0.1, 45) == 4  # 4.5 rounds to even
    assert validation_count(0.25, 50) == 12  # 12.5 rounds to even
    assert validation_count(7, 50) == 7
    a = split_and_scale(raw(), spec(validation_size=0.2, seed=1))
    b = split_and_scale(raw(), spec(validation_size=0.2, seed=2))
    assert len(a.x_valid) == 20 and not np.array_equal(a.x_valid, b.x_valid)


def test_no_validation_gives_an_empty_split_of_the_right_shape():
    ds = split_and_scale(raw(), spec(scaling="none"))
    assert ds.x_valid.shape == (0, 2, 3, 1) and ds.y_valid.shape == (0,)
    assert sorted(ids(ds.x_train)) == list(range(100))


def test_limits_trim_the_training_part_after_the_split_and_subsample_the_test_set():
    ds = split_and_scale(
        raw(), spec(validation_size=30, limit_train=25, limit_test=15, scaling="none", seed=3)
    )
    rng = np.random.default_rng(3)
    order = rng.permutation(100)
    test_pick = np.sort(rng.choice(40, size=15, replace=False))
    np.testing.assert_array_equal(ids(ds.x_valid), order[:30])  # untouched by the limit
    np.testing.assert_array_equal(ids(ds.x_train), order[30:55])
    np.testing.assert_array_equal(ids(ds.x_test), test_pick)
    assert split_and_scale(raw(), spec(limit_train=1000, limit_test=1000)).x_train.shape[0] == 100


def test_unit_scaling_is_x_over_255():
    ds = split_and_scale(raw(), spec(validation_size=10))
    expected = ids(split_and_scale(raw(), spec(validation_size=10, scaling="none")).x_train).astype(
        np.float32
    ) / np.float32(255)
    np.testing.assert_array_equal(ds.x_train[:, 0, 0, 0], expected)
    assert ds.scaling_stats is None


def test_standardize_fits_on_the_limited_training_split_only():
    rng = np.random.default_rng(0)
    r = RawDataset(
        name="toy",
        x_train=rng.integers(0, 256, (200, 2, 2, 3)).astype(np.uint8),
        y_train=np.zeros(200, np.int64),
        x_test=(rng.integers(0, 128, (50, 2, 2, 3))).astype(np.uint8),  # darker: other statistics
        y_test=np.zeros(50, np.int64),
        classes=("a",),
        path="toy",
        format="fabricated",
    )
    ds = split_and_scale(r, spec(validation_size=40, limit_train=100, scaling="standardize", seed=5))

    order = np.random.default_rng(5).permutation(200)
    fitted_on = r.x_train[order[40:140]].astype(np.float64)
    mean = fitted_on.sum(axis=0) / 100  # by hand: population mean and std of the 100 training examples
    std = np.sqrt(((fitted_on - mean) ** 2).sum(axis=0) / 100)
    np.testing.assert_allclose(ds.scaling_stats.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.scaling_stats.std, std, rtol=1e-6)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (r.x_test - mean) / std, rtol=1e-5, atol=1e-5)
    assert np.all(ds.x_test.mean(axis=0) < -0.5)  # the test set is not re-centred on itself
    np.testing.assert_allclose(ds.x_valid, (r.x_train[order[:40]] - mean) / std, rtol=1e-5, atol=1e-5)


def test_constant_features_get_std_one():
    x = np.zeros((10, 1, 2, 1), np.float32)
    x[:, 0, 1, 0] = np.arange(10)
    stats = fit_standardization(x)
    assert stats.std[0, 0, 0] == 1.0 and stats.mean[0, 0, 0] == 0.0
    np.testing.assert_allclose(stats.std[0, 1, 0], np.std(np.arange(10)))


def test_validation_that_leaves_no_training_data_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"data.validation_size: 100 leaves no training examples out of 100"
    ):
        split_and_scale(raw(), spec(validation_size=100))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"dataset": "npz", "path": "x.npz", "validation_size": 1.5},
            r"^data.validation_size: a float must be a fraction in \(0, 1\)",
        ),
        (
            {"dataset": "npz", "path": "x.npz", "limit_train": 0},
            r"^data.limit_train: Input should be greater than 0",
        ),
        (
            {"dataset": "npz", "path": "x.npz", "scaling": "minmax"},
            r"^data.scaling: Input should be 'unit', 'standardize' or 'none'",
        ),
        (
            {"dataset": "npz", "path": "x.npz", "shuffle": True},
            r"^data.shuffle: Extra inputs are not permitted",
        ),
        ({"dataset": "mnist"}, r"^data.dataset: Input should be 'cifar10'"),
    ],
)
def test_spec_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset(data)


# --- data.classes and data.positive_class ------------------------------------------------------------------


def test_classes_keep_only_the_listed_ones_relabelled_in_order_before_the_split():
    # Labels are k % 10; keep 7, 2 and 5 (in that order): label 7 → 0, 2 → 1, 5 → 2.
    ds = split_and_scale(raw(), spec(validation_size=6, classes=[7, 2, 5], scaling="none", seed=5))
    kept = np.flatnonzero(np.isin(np.arange(100) % 10, [7, 2, 5]))  # 30 training examples
    order = kept[np.random.default_rng(5).permutation(len(kept))]  # the shuffle counts kept examples only
    np.testing.assert_array_equal(ids(ds.x_valid), order[:6])
    np.testing.assert_array_equal(ids(ds.x_train), order[6:])
    new = {7: 0, 2: 1, 5: 2}
    np.testing.assert_array_equal(ds.y_train, [new[k % 10] for k in order[6:]])
    np.testing.assert_array_equal(ds.y_valid, [new[k % 10] for k in order[:6]])
    np.testing.assert_array_equal(ids(ds.x_test), [k for k in range(40) if k % 10 in new])
    np.testing.assert_array_equal(ds.y_test, [new[k % 10] for k in range(40) if k % 10 in new])
    assert ds.classes == ("7", "2", "5") and ds.num_classes == 3


def test_classes_by_name_and_limits_count_kept_examples():
    ds = split_and_scale(raw(), spec(classes=["3", "4"], limit_train=5, limit_test=3, scaling="none", seed=2))
    rng = np.random.default_rng(2)
    kept = np.flatnonzero(np.isin(np.arange(100) % 10, [3, 4]))
    order = kept[rng.permutation(len(kept))]
    test_kept = np.flatnonzero(np.isin(np.arange(40) % 10, [3, 4]))
    np.testing.assert_array_equal(ids(ds.x_train), order[:5])
    np.testing.assert_array_equal(
        ids(ds.x_test), test_kept[np.sort(rng.choice(len(test_kept), 3, replace=False))]
    )
    assert set(ds.y_train) <= {0, 1}


def test_positive_class_makes_a_binary_task():
    # The chapter's sandal (5) vs shirt (6): shirt is the positive class.
    ds = split_and_scale(raw(), spec(classes=[5, 6], positive_class=6, scaling="none"))
    np.testing.assert_array_equal(ds.y_train, (ids(ds.x_train) % 10 == 6).astype(np.int64))
    np.testing.assert_array_equal(ds.y_test, (ids(ds.x_test) % 10 == 6).astype(np.int64))
    assert ds.classes == ("5", "6") and len(ds.x_train) == 20
    # Without a keep-list: one class against all the others.
    ds = split_and_scale(raw(), spec(positive_class="0", scaling="none"))
    assert ds.classes == ("not 0", "0") and len(ds.x_train) == 100
    np.testing.assert_array_equal(ds.y_train, (ids(ds.x_train) % 10 == 0).astype(np.int64))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"classes": [3, 12]}, r"data\.classes: 12 is not a class index of toy, which has classes 0 to 9"),
        ({"classes": ["3", "cat"]}, r"data\.classes: 'cat' is not a class name of toy"),
        ({"classes": [3, "3"]}, r"data\.classes: \[3, '3'\] names a class twice"),
        (
            {"classes": [3, 4], "positive_class": 5},
            r"data\.positive_class: '5' is not among the kept data\.classes",
        ),
    ],
)
def test_class_selection_errors_name_the_key(kw, message):
    with pytest.raises(ConfigError, match=message):
        split_and_scale(raw(), spec(**kw))


def test_class_spec_rejects_a_repeated_class():
    with pytest.raises(ValueError, match="classes: each class may be listed once"):
        spec(classes=[1, 1])
