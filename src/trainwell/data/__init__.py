"""Datasets: find a copy, verify it, read it safely, cache the decoded arrays, split and scale.

``load_dataset(spec)`` returns a :class:`Dataset` of float32 ``(N, H, W, C)`` arrays and int64 labels;
``dataset_info(name)`` describes the copy that would be used. See ``cifar10``, ``fashion_mnist``,
``imagefolder`` and ``npz`` for the formats, ``cache`` for the cache, ``preprocessing`` for splits and scaling.
"""

from trainwell.data.cache import cache_dir
from trainwell.data.dataset import Dataset, ScalingStats
from trainwell.data.loading import DATASETS, dataset_info, load_dataset
from trainwell.data.spec import DataSpec

__all__ = ["DATASETS", "DataSpec", "Dataset", "ScalingStats", "cache_dir", "dataset_info", "load_dataset"]
