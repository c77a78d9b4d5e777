"""Datasets as in-memory tensors: ``digits`` (embedded), ``mnist``, ``cifar10``, ``svhn`` and ``tiny-imagenet``;
and part-annotated images (:class:`PartData`): PASCAL-Part (:func:`load_pascal_part`, for users who have it) and a
generated stand-in (:func:`synthetic_parts`); :func:`part_dataset` reads either from a JSON-able description.

Images are float32 ``(N, C, H, W)`` in ``[0, 1]``, labels int64 ``(N,)``.

Data root (:func:`resolve_data_root`): the explicit ``root`` (CLI ``--data-root``), else
``$MASKDEFENSE_DATA``, else ``platformdirs.user_cache_dir("maskdefense")/data``. Layout under it
(the torchvision layout, so an existing torchvision data folder works as is)::

    MNIST/raw/train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz
    MNIST/raw/t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz
    cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin     (CIFAR-10 binary version, preferred)
    cifar-10-batches-py/data_batch_{1..5}, test_batch              (CIFAR-10 python version)
    cifar-10-binary.tar.gz / cifar-10-python.tar.gz                (official archives, if downloaded)
    SVHN/train_32x32.mat   SVHN/test_32x32.mat
    tiny-imagenet-200.zip  or the folder it extracts to, tiny-imagenet-200/       (Tiny-ImageNet-200)
    tiny-imagenet-200-decoded/{trainval,test}.npz    (written: Tiny-ImageNet's JPEGs decoded once)

Every file is checked against its official md5 on each load; a corrupted file is refused with a
:class:`DataError`, never half-loaded (Tiny-ImageNet's extracted folder has no checksums: its files are
checked for presence, names and format; see :mod:`maskdefense.data._tiny_imagenet`). Missing files are
downloaded from the official URL(s) when ``download=True`` (temporary file, md5 check, atomic rename); if
that is impossible the error names the file, its md5, its URL and the exact path where to put it. CIFAR-10
python pickles are read with a restricted unpickler that only rebuilds numpy arrays and never executes code.

Splits: ``"test"`` is the official test set, ``"trainval"`` the whole official training set,
``"val"`` a seeded subset of it (``val_size``, default :attr:`DatasetInfo.default_val_size`;
``split_seed`` seeds a ``torch.Generator``) and ``"train"`` the rest of trainval. ``digits`` has no
official split: its test split is a fixed set of 360 images chosen by ``torch.randperm`` under seed 0.
Tiny-ImageNet's ``"test"`` is its official val set (the official test set has no labels).
"""

from __future__ import annotations

from ._catalog import ENV_VAR, dataset_info, list_datasets, resolve_data_root
from ._load import SPLITS, load_dataset
from ._parts import (PART_SOURCES, SHAPES, SYNTHETIC_SPLIT_SIZES, PartScenes, attribute_matrix, part_dataset,
                     part_overlap, render_part_scenes, sample_part_scenes, synthetic_parts)
from ._pascal_part import PASCAL_PART_CLASSES, PASCAL_PART_PARTS, load_pascal_part, merge_part_name
from ._types import DataError, DatasetInfo, DatasetName, FileSpec, ImageData, PartData

__all__ = [
    "DataError",
    "DatasetInfo",
    "DatasetName",
    "ENV_VAR",
    "FileSpec",
    "ImageData",
    "SPLITS",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
    "PartData",
    "PartScenes",
    "SHAPES",
    "SYNTHETIC_SPLIT_SIZES",
    "attribute_matrix",
    "part_overlap",
    "sample_part_scenes",
    "render_part_scenes",
    "synthetic_parts",
    "part_dataset",
    "PART_SOURCES",
    "PASCAL_PART_CLASSES",
    "PASCAL_PART_PARTS",
    "load_pascal_part",
    "merge_part_name",
]
