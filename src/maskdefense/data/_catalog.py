"""The dataset catalog: official files, checksums, URLs, and where the data root is.

Checksums (all confirmed against public copies of torchvision's dataset code and the dataset
authors' pages, and, for the files on this machine, against the files themselves):

* MNIST idx ``.gz`` files: the four md5s torchvision lists.
* CIFAR-10 binary version: the per-file md5s of the six ``.bin`` files published with the offline
  copy, and the md5 of ``cifar-10-binary.tar.gz`` listed on https://www.cs.toronto.edu/~kriz/cifar.html.
* CIFAR-10 python version: per-batch md5s and ``cifar-10-python.tar.gz`` md5 from torchvision.
* SVHN cropped digits: ``train_32x32.mat`` / ``test_32x32.mat`` md5s from torchvision.
* Tiny-ImageNet-200: the md5 of ``tiny-imagenet-200.zip`` (248,100,043 bytes) that the public Tiny-ImageNet
  loaders agree on; the archive has no per-file checksums.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..registry import UnknownNameError
from ._types import DatasetInfo, DatasetName, FileSpec

#: Environment variable naming the data root (used when no explicit root is given).
ENV_VAR = "MASKDEFENSE_DATA"

DIGIT_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# ---------------------------------------------------------------------------------------------
# MNIST
MNIST_DIR = "MNIST/raw"
_MNIST_URLS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MNIST_FILES = tuple(
    FileSpec(f"{MNIST_DIR}/{name}", md5, tuple(base + name for base in _MNIST_URLS))
    for name, md5 in _MNIST_MD5.items()
)

# ---------------------------------------------------------------------------------------------
# CIFAR-10 (two official versions of the same data)
CIFAR_BIN_DIR = "cifar-10-batches-bin"
CIFAR_PY_DIR = "cifar-10-batches-py"
CIFAR_BIN_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_PY_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_BIN_URL = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
_CIFAR_PY_URL = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
_CIFAR_BIN_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
_CIFAR_PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR_FILES = tuple(
    FileSpec(f"{CIFAR_BIN_DIR}/{name}", md5, _CIFAR_BIN_URL, CIFAR_BIN_ARCHIVE)
    for name, md5 in _CIFAR_BIN_MD5.items()
) + tuple(
    FileSpec(f"{CIFAR_PY_DIR}/{name}", md5, _CIFAR_PY_URL, CIFAR_PY_ARCHIVE)
    for name, md5 in _CIFAR_PY_MD5.items()
)

# ---------------------------------------------------------------------------------------------
# SVHN (cropped digits, format 2)
SVHN_DIR = "SVHN"
_SVHN_FILES = (
    FileSpec(f"{SVHN_DIR}/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373",
             ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",)),
    FileSpec(f"{SVHN_DIR}/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
             ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",)),
)

# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet-200 (read from the official zip or from the folder it extracts to; see _tiny_imagenet)
TINY_DIR = "tiny-imagenet-200"
TINY_ZIP = "tiny-imagenet-200.zip"
#: Folder (under the data root) of the decoded uint8 arrays, one ``.npz`` per official part.
TINY_CACHE_DIR = "tiny-imagenet-200-decoded"
_TINY_FILES = (
    FileSpec(TINY_ZIP, "90528d7ca1a48142e341f4ef8d21d0de", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",)),
)

#: md5 of each official archive, by file name (the archive is kept at ``<root>/<name>``).
ARCHIVE_MD5: dict[str, str] = {
    CIFAR_BIN_ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530",
    CIFAR_PY_ARCHIVE: "c58f30108f718f92721af3b95e74349a",
}

#: Size of the fixed digits test split, and the seed of the permutation that chooses it.
DIGITS_TEST_SIZE = 360
DIGITS_TEST_SEED = 0
_DIGITS_TOTAL = 1797

_INFOS: dict[DatasetName, DatasetInfo] = {
    DatasetName.DIGITS: DatasetInfo(
        name="digits", channels=1, size=8, num_classes=10, classes=DIGIT_CLASSES,
        train_size=_DIGITS_TOTAL - DIGITS_TEST_SIZE, test_size=DIGITS_TEST_SIZE,
        default_val_size=round(0.1 * (_DIGITS_TOTAL - DIGITS_TEST_SIZE)),  # 144
        files=(),
        description=(
            "UCI optical handwritten digits as shipped inside scikit-learn "
            "(sklearn.datasets.load_digits: 1797 grey 8x8 images, values 0..16 scaled to [0, 1]); "
            "no files, no download. It has no official split: the test split is a fixed set of "
            f"{DIGITS_TEST_SIZE} images chosen by torch.randperm(1797) with a torch.Generator "
            f"seeded {DIGITS_TEST_SEED}; the other 1437 images (in their original order) are "
            "'trainval'."
        ),
    ),
    DatasetName.MNIST: DatasetInfo(
        name="mnist", channels=1, size=28, num_classes=10, classes=DIGIT_CLASSES,
        train_size=60000, test_size=10000, default_val_size=5000, files=_MNIST_FILES,
        description=(
            "MNIST handwritten digits, 28x28 grey: the four official idx .gz files, read from "
            f"<root>/{MNIST_DIR}/ (the torchvision layout)."
        ),
    ),
    DatasetName.CIFAR10: DatasetInfo(
        name="cifar10", channels=3, size=32, num_classes=10, classes=CIFAR10_CLASSES,
        train_size=50000, test_size=10000, default_val_size=5000, files=_CIFAR_FILES,
        description=(
            "CIFAR-10, 32x32 RGB, official order. Either official version is read: the binary "
            f"version in <root>/{CIFAR_BIN_DIR}/ (preferred; from {CIFAR_BIN_ARCHIVE}) or the "
            f"python version in <root>/{CIFAR_PY_DIR}/ (from {CIFAR_PY_ARCHIVE}; pickles are read "
            "with a restricted unpickler that only rebuilds numpy arrays)."
        ),
    ),
    DatasetName.SVHN: DatasetInfo(
        name="svhn", channels=3, size=32, num_classes=10, classes=DIGIT_CLASSES,
        train_size=73257, test_size=26032, default_val_size=5000, files=_SVHN_FILES,
        description=(
            "SVHN cropped digits (format 2), 32x32 RGB: the official train_32x32.mat and "
            f"test_32x32.mat in <root>/{SVHN_DIR}/ (label 10 means digit 0 and is mapped to 0). "
            "The 'extra' set is not used."
        ),
    ),
    DatasetName.TINY_IMAGENET: DatasetInfo(
        name="tiny-imagenet", channels=3, size=64, num_classes=200, classes=(),
        train_size=100000, test_size=10000, default_val_size=10000, files=_TINY_FILES,
        description=(
            "Tiny-ImageNet-200 (Le & Yang, CS 231N 2015), 64x64 RGB, 200 ImageNet classes: read from the official "
            f"{TINY_ZIP} at <root>/{TINY_ZIP} (md5-checked) or, when the zip is absent, from the folder it "
            f"extracts to, <root>/{TINY_DIR}/. Class index = line of wnids.txt; class names from words.txt "
            "(else the wnids). 'trainval' is the official train set (500 images per class); 'test' is the "
            "official val set (val/val_annotations.txt gives each image's class): the official test set has "
            "no labels and is not read. The default 'val' split (10000, 50 per class on average, as the "
            "official val) is carved from train. Grey JPEGs are converted to RGB. The JPEGs are decoded "
            f"once into <root>/{TINY_CACHE_DIR}/ (uint8 .npz, 1.2 GB for train, 0.12 GB for test), "
            "reused while the source is unchanged."
        ),
    ),
}


def list_datasets() -> list[str]:
    """Names of the known datasets, sorted."""
    return sorted(info.name for info in _INFOS.values())


def _canonical(name: str | DatasetName) -> DatasetName:
    if isinstance(name, DatasetName):
        return name
    if isinstance(name, str):
        key = name.strip().lower()
        for member in DatasetName:
            if member.value == key:
                return member
        close = difflib.get_close_matches(key, list_datasets(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
    else:
        hint = f" (got a {type(name).__name__}, expected a string)"
    raise UnknownNameError(f"unknown dataset {name!r}.{hint} Known: {', '.join(list_datasets())}")


def dataset_info(name: str | DatasetName) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name`` (case-insensitive).

    Raises:
        UnknownNameError: ``name`` is not a known dataset; the message lists close matches.
    """
    return _INFOS[_canonical(name)]


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding dataset files.

    Precedence: the explicit ``root`` (the CLI's ``--data-root``), else the environment variable
    ``MASKDEFENSE_DATA`` (when set and non-empty), else ``platformdirs.user_cache_dir("maskdefense")/"data"``.
    ``~`` is expanded and the result is absolute. The folder is not created here.
    """
    if root is not None:
        path = Path(os.fspath(root))
    elif os.environ.get(ENV_VAR, "").strip():
        path = Path(os.environ[ENV_VAR].strip())
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("maskdefense")) / "data"
    return path.expanduser().absolute()
