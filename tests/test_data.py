"""Tests of maskdefense.data: formats, checksums, downloads, splits, data root."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from maskdefense.data import (
    DataError,
    DatasetName,
    FileSpec,
    ImageData,
    dataset_info,
    list_datasets,
    load_dataset,
    resolve_data_root,
)
from maskdefense.data import _catalog, _files, _formats, _load, _tiny_imagenet
from maskdefense.registry import UnknownNameError

from conftest import patch_specs  # noqa: E402

MNIST_T10K = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_FIRST_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every urlopen fail like an offline machine; returns the list of URLs tried."""
    tried: list[str] = []

    def fail(url, *a, **k):
        tried.append(url if isinstance(url, str) else url.full_url)
        raise urllib.error.URLError("network is unreachable (mocked)")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    return tried


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def idx_gz(array: np.ndarray, magic: int, claim: tuple[int, ...] | None = None) -> bytes:
    dims = claim if claim is not None else array.shape
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def cifar_records(shared: Path, batch: str, n: int) -> bytes:
    with open(shared / "cifar-10-batches-bin" / batch, "rb") as f:
        return f.read(n * _formats.CIFAR_RECORD)


def cifar_pickle(records: bytes, protocol: int) -> bytes:
    arr = np.frombuffer(records, np.uint8).reshape(-1, _formats.CIFAR_RECORD)
    batch = {
        b"batch_label": b"stand-in batch",
        b"labels": [int(v) for v in arr[:, 0]],
        b"data": np.ascontiguousarray(arr[:, 1:]),
        b"filenames": [b"img%d.png" % i for i in range(len(arr))],
    }
    return pickle.dumps(batch, protocol=protocol)


# ---------------------------------------------------------------------------------------------
# catalog, names, data root


def test_catalog():
    assert list_datasets() == ["cifar10", "digits", "mnist", "svhn", "tiny-imagenet"]
    assert dataset_info("MNIST") is dataset_info(DatasetName.MNIST)
    info = dataset_info(" cifar10 ")
    assert (info.channels, info.size, info.num_classes, info.train_size, info.test_size) == (3, 32, 10, 50000, 10000)
    assert info.classes[3] == "cat" and len(info.classes) == 10
    assert len(info.files) == 12 and {f.archive for f in info.files} == {"cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"}
    assert dataset_info("digits").files == () and dataset_info("digits").default_val_size == 144
    for name in list_datasets():
        i = dataset_info(name)
        assert i.name == name and i.description
        assert len(i.classes) == i.num_classes or (name == "tiny-imagenet" and i.classes == ())  # read from wnids.txt
        for f in i.files:
            assert isinstance(f, FileSpec) and len(f.md5) == 32 and f.urls and not Path(f.relpath).is_absolute()
    svhn = dataset_info("svhn")
    assert svhn.file("SVHN/train_32x32.mat").md5 == "e26dedcc434d2e4c54c9b2d4a06d8373"
    assert svhn.file("SVHN/test_32x32.mat").md5 == "eb5a983be6a315427106f1b164d9cef3"
    assert any("ossci-datasets" in u for u in dataset_info("mnist").files[0].urls)
    tiny = dataset_info("tiny-imagenet")
    assert (tiny.channels, tiny.size, tiny.num_classes, tiny.train_size, tiny.test_size, tiny.default_val_size) == (
        3, 64, 200, 100000, 10000, 10000)
    assert tiny.files == (FileSpec("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
                                   ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",)),)
    assert "no labels" in tiny.description


def test_unknown_name():
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("cifar100", "test")
    with pytest.raises(UnknownNameError, match="Known: cifar10, digits, mnist, svhn, tiny-imagenet"):
        dataset_info("imagenet")
    with pytest.raises(KeyError):  # UnknownNameError is a KeyError and a ValueError
        dataset_info("nope")


def test_bad_split_and_arguments():
    with pytest.raises(ValueError, match="train, val, test, trainval"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", "test", limit=-1)
    with pytest.raises(TypeError, match="val_size"):
        load_dataset("digits", "val", val_size=1.5)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("digits", "train", val_size=1437)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKDEFENSE_DATA", raising=False)
    default = resolve_data_root()
    assert default.name == "data" and "maskdefense" in str(default) and default.is_absolute()
    env, explicit = tmp_path / "env", tmp_path / "explicit"
    monkeypatch.setenv("MASKDEFENSE_DATA", str(env))
    assert resolve_data_root() == env
    assert resolve_data_root(explicit) == explicit
    assert resolve_data_root(str(explicit)) == explicit
    monkeypatch.setenv("MASKDEFENSE_DATA", "")
    assert resolve_data_root() == default
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/d") == tmp_path / "d"


def test_env_var_is_used_by_loader(monkeypatch, tmp_path, shared_data):
    monkeypatch.setenv("MASKDEFENSE_DATA", str(shared_data))
    assert len(load_dataset("mnist", "test", limit=3)) == 3
    # the explicit root wins over the environment variable
    with pytest.raises(DataError, match=str(tmp_path)):
        load_dataset("mnist", "test", root=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# digits and splits


def test_digits():
    test = load_dataset("digits", "test")
    trainval = load_dataset("digits", "trainval")
    assert (len(test), len(trainval)) == (360, 1437)
    for d in (test, trainval):
        assert d.images.shape[1:] == (1, 8, 8) and d.images.dtype == torch.float32 and d.images.is_contiguous()
        assert d.labels.dtype == torch.int64 and float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
        assert set(d.labels.tolist()) == set(range(10)) and d.classes == tuple("0123456789")
    # test and trainval partition the 1797 images
    t_idx, tv_idx = _load._digits_test_indices()
    assert len(set(t_idx) | set(tv_idx)) == 1797 and not set(t_idx) & set(tv_idx)
    assert torch.equal(load_dataset("digits", "test").images, test.images)  # fixed


def rows(d: ImageData) -> list[bytes]:
    return sorted(x.numpy().tobytes() + bytes([y]) for x, y in zip(d.images, d.labels.tolist()))


def test_digits_train_val_split():
    trainval = load_dataset("digits", "trainval")
    train, val = load_dataset("digits", "train"), load_dataset("digits", "val")
    assert (len(train), len(val)) == (1437 - 144, 144) and (train.split, val.split) == ("train", "val")
    assert rows(train) + rows(val) != [] and sorted(rows(train) + rows(val)) == rows(trainval)
    again = load_dataset("digits", "val", split_seed=0)
    assert torch.equal(again.images, val.images) and torch.equal(again.labels, val.labels)
    other = load_dataset("digits", "val", split_seed=1)
    assert not torch.equal(other.images, val.images)
    v10 = load_dataset("digits", "val", val_size=10)
    assert len(v10) == 10 and len(load_dataset("digits", "train", val_size=10)) == 1427
    assert len(load_dataset("digits", "train", val_size=0)) == 1437
    first = load_dataset("digits", "train", limit=7)
    assert torch.equal(first.images, train.images[:7]) and len(load_dataset("digits", "test", limit=0)) == 0


def test_split_indices():
    tr, va = _load.split_indices(1000, 100, 3)
    assert len(va) == 100 and len(tr) == 900 and not set(tr) & set(va)
    assert sorted(set(tr) | set(va)) == list(range(1000))
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    tr2, va2 = _load.split_indices(1000, 100, 3)
    assert (va == va2).all() and not (va == _load.split_indices(1000, 100, 4)[1]).all()


def test_image_data_methods():
    d = load_dataset("digits", "test", limit=20)
    images, labels = d.tensors()
    assert images is d.images and labels is d.labels and len(d) == 20
    s = d.subset([3, 1, -1])
    assert torch.equal(s.images, images[[3, 1, 19]]) and torch.equal(s.labels, labels[[3, 1, 19]])
    assert s.images.is_contiguous() and s.name == "digits" and s.split == "test"
    assert len(d.subset(slice(5, 10))) == 5 and len(d.subset(range(4))) == 4
    assert len(d.subset(torch.tensor([True, False] * 10))) == 10 and len(d.subset([])) == 0
    with pytest.raises(IndexError):
        d.subset([20])
    assert "n=20" in repr(d)


# ---------------------------------------------------------------------------------------------
# MNIST (official files)


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return load_dataset("mnist", "test", root=shared_data, download=False)


def test_mnist(shared_data, mnist_test):
    train = load_dataset("mnist", "trainval", root=shared_data, download=False)
    assert (len(train), len(mnist_test)) == (60000, 10000)
    for d in (train, mnist_test):
        assert d.images.shape[1:] == (1, 28, 28) and d.images.dtype == torch.float32 and d.images.is_contiguous()
        assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
        counts = torch.bincount(d.labels, minlength=10)
        assert counts.sum() == len(d) and (counts > 0.08 * len(d)).all() and (counts < 0.12 * len(d)).all()
    assert int(mnist_test.labels[0]) == 7 and int(train.labels[0]) == 5
    val = load_dataset("mnist", "val", root=shared_data, download=False, limit=10)
    assert len(val) == 10


def test_mnist_val_train_sizes(shared_data):
    raw_images, labels, _, _ = _load.load_raw("mnist", "trainval", shared_data, download=False)
    assert raw_images.shape == (60000, 1, 28, 28)
    tr, va = _load.split_indices(60000, dataset_info("mnist").default_val_size, 0)
    assert (len(tr), len(va)) == (55000, 5000)
    val = load_dataset("mnist", "val", root=shared_data, download=False)
    assert len(val) == 5000 and torch.equal(val.labels, torch.from_numpy(labels[va]))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 binary (official files) and python version (stand-in pickles)


def test_cifar10_binary(shared_data):
    test = load_dataset("cifar10", "test", root=shared_data, download=False)
    assert len(test) == 10000 and test.images.shape[1:] == (3, 32, 32) and test.images.dtype == torch.float32
    assert int(test.labels[0]) == 3 and test.classes[int(test.labels[0])] == "cat"
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
    images, labels, full, _ = _load.load_raw("cifar10", "trainval", shared_data, download=False)
    assert images.shape == (50000, 3, 32, 32) and full == 255.0
    assert labels[:10].tolist() == CIFAR_FIRST_TRAIN_LABELS and (np.bincount(labels) == 5000).all()
    first = load_dataset("cifar10", "trainval", root=shared_data, download=False, limit=2)
    assert first.labels.tolist() == CIFAR_FIRST_TRAIN_LABELS[:2]
    # record layout: label byte, then R, G, B planes
    rec = np.frombuffer(cifar_records(shared_data, "data_batch_1.bin", 1), np.uint8)
    assert torch.equal(first.images[0] * 255, torch.from_numpy(rec[1:].reshape(3, 32, 32).astype(np.float32)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_version_agrees_with_binary(shared_data, tmp_path, monkeypatch, protocol):
    recs = cifar_records(shared_data, "test_batch.bin", 20)
    blob = cifar_pickle(recs, protocol)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(blob)
    # the md5 check stays on: the stand-in's md5 replaces the official one
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    patch_specs(monkeypatch, "cifar10", {"cifar-10-batches-py/test_batch": {"md5": md5(blob)}})
    py = load_dataset("cifar10", "test", root=tmp_path, download=False)
    binary = load_dataset("cifar10", "test", root=shared_data, download=False, limit=20)
    assert len(py) == 20 and torch.equal(py.images, binary.images) and torch.equal(py.labels, binary.labels)


def test_cifar10_python_trainval_and_preference(shared_data, tmp_path, monkeypatch):
    changes = {}
    expected = []
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        recs = cifar_records(shared_data, f"data_batch_{i}.bin", 3)
        expected.append(recs)
        blob = cifar_pickle(recs, 2)
        (folder / f"data_batch_{i}").write_bytes(blob)
        changes[f"cifar-10-batches-py/data_batch_{i}"] = {"md5": md5(blob)}
    patch_specs(monkeypatch, "cifar10", changes)
    d = load_dataset("cifar10", "trainval", root=tmp_path, download=False)
    arr = np.frombuffer(b"".join(expected), np.uint8).reshape(15, -1)
    assert d.labels.tolist() == arr[:, 0].tolist()
    assert torch.equal(d.images * 255, torch.from_numpy(arr[:, 1:].reshape(15, 3, 32, 32).astype(np.float32)))
    assert len(load_dataset("cifar10", "train", root=tmp_path, download=False, val_size=5)) == 10
    # with both versions present the binary version is read
    (tmp_path / "cifar-10-batches-bin").mkdir()
    for i in range(1, 6):
        os.symlink(shared_data / "cifar-10-batches-bin" / f"data_batch_{i}.bin",
                   tmp_path / "cifar-10-batches-bin" / f"data_batch_{i}.bin")
    assert len(load_dataset("cifar10", "trainval", root=tmp_path, download=False, limit=100)) == 100
    images, _, _, _ = _load.load_raw("cifar10", "trainval", tmp_path, download=False)
    assert len(images) == 50000


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    target = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    blob = pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2)
    assert b"open" in blob
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(blob)
    patch_specs(monkeypatch, "cifar10", {"cifar-10-batches-py/test_batch": {"md5": md5(blob)}})
    with pytest.raises(DataError, match="not allowed"):
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert not target.exists()
    # other routes to code are closed too
    system = pickle.dumps(os.system, protocol=2)
    with pytest.raises(DataError, match="posix.system|os.system"):
        _formats.restricted_loads(system, "x")
    with pytest.raises(DataError, match="latin-1"):
        _formats.restricted_loads(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R.", "x")


def test_cifar_pickle_wrong_content(tmp_path):
    bad = pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        _formats.parse_cifar_pickle(bad, "x")
    bad = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]})
    with pytest.raises(DataError, match="labels outside"):
        _formats.parse_cifar_pickle(bad, "x")
    with pytest.raises(DataError):
        _formats.parse_cifar_pickle(b"not a pickle", "x")
    with pytest.raises(DataError, match="whole number"):
        _formats.parse_cifar_bin(b"\x00" * 3000, "x")


# ---------------------------------------------------------------------------------------------
# corrupted, truncated, malformed files


def copy_t10k(shared: Path, root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_T10K:
        shutil.copyfile(shared / "MNIST" / "raw" / name, raw / name)
    return raw


def test_corrupted_file_is_refused(shared_data, tmp_path):
    raw = copy_t10k(shared_data, tmp_path)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=tmp_path, download=True)  # present: never re-downloaded silently
    msg = str(e.value)
    assert str(path) in msg and "md5" in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert md5(bytes(data)) in msg and "Delete it" in msg


def test_truncated_file_is_refused(shared_data, tmp_path):
    raw = copy_t10k(shared_data, tmp_path)
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is corrupted or incomplete: its md5"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


def test_malformed_idx_stand_ins(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)

    def write(img_blob: bytes, lbl_blob: bytes) -> None:
        (raw / MNIST_T10K[0]).write_bytes(img_blob)
        (raw / MNIST_T10K[1]).write_bytes(lbl_blob)
        patch_specs(monkeypatch, "mnist", {f"MNIST/raw/{MNIST_T10K[0]}": {"md5": md5(img_blob)},
                                           f"MNIST/raw/{MNIST_T10K[1]}": {"md5": md5(lbl_blob)}})

    good_labels = idx_gz(labels, 0x801)
    write(idx_gz(images, 0x803), good_labels)
    d = load_dataset("mnist", "test", root=tmp_path, download=False)
    assert torch.equal(d.images[:, 0] * 255, torch.from_numpy(images.astype(np.float32)))
    assert d.labels.tolist() == labels.tolist()
    write(idx_gz(images, 0x803, claim=(10, 28, 28)), good_labels)  # header says 10 images, 5 present
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", "test", root=tmp_path, download=False)
    write(idx_gz(images, 0x801, claim=(5 * 28 * 28,)), good_labels)  # a labels file in place of images
    with pytest.raises(DataError, match="magic"):
        load_dataset("mnist", "test", root=tmp_path, download=False)
    write(idx_gz(images, 0x803)[:-30], good_labels)  # cut gzip stream
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", "test", root=tmp_path, download=False)
    write(idx_gz(images, 0x803), idx_gz(labels[:4], 0x801))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# missing files and downloads


def test_missing_without_download(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") in msg
    assert "9fb629c4189551a2d022fa330f9573f3" in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert "download=False" in msg and leftovers(tmp_path) == []


def test_missing_with_failed_download(tmp_path, monkeypatch):
    tried = no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=tmp_path)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz" in msg
    assert "Download failed" in msg and "mocked" in msg
    assert len(tried) == 4 and leftovers(tmp_path) == []  # two files x two URLs, nothing left behind


def test_cifar_missing_names_both_versions(tmp_path, monkeypatch):
    tried = no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "test", root=tmp_path)
    msg = str(e.value)
    for s in ("cifar-10-batches-bin/test_batch.bin", "cifar-10-batches-py/test_batch",
              "803d5f7f4d78ea53de84dbe85f74fb6d", "40351d587109b95175f43aff81a1287e",
              "c32a1d4ab5d03f1284b67883e8d87530", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
              "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(tmp_path / "cifar-10-binary.tar.gz")):
        assert s in msg, s
    assert tried == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]


def test_svhn_missing(tmp_path, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        load_dataset("svhn", "train", root=tmp_path)
    msg = str(e.value)
    assert "train_32x32.mat" in msg and "e26dedcc434d2e4c54c9b2d4a06d8373" in msg
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in msg and str(tmp_path / "SVHN") in msg


def test_download_from_file_urls(shared_data, tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    src.mkdir()
    changes = {}
    for name in MNIST_T10K:
        shutil.copyfile(shared_data / "MNIST" / "raw" / name, src / name)
        # first URL is dead, second works: the mirror fallback
        changes[f"MNIST/raw/{name}"] = {"urls": ((src / "gone" / name).as_uri(), (src / name).as_uri())}
    patch_specs(monkeypatch, "mnist", changes)
    root = tmp_path / "root"
    d = load_dataset("mnist", "test", root=root, limit=50)
    ref = load_dataset("mnist", "test", root=shared_data, download=False, limit=50)
    assert torch.equal(d.images, ref.images) and torch.equal(d.labels, ref.labels)
    assert sorted(p.name for p in leftovers(root)) == sorted(MNIST_T10K)  # no temporary files left
    for name in MNIST_T10K:
        assert md5((root / "MNIST" / "raw" / name).read_bytes()) == md5((src / name).read_bytes())


def test_bad_download_leaves_no_file(shared_data, tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "wrong.gz").write_bytes(b"this is not the official file" * 100)
    changes = {f"MNIST/raw/{name}": {"urls": ((src / "wrong.gz").as_uri(),)} for name in MNIST_T10K}
    patch_specs(monkeypatch, "mnist", changes)
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=root)
    assert "md5 of the received file" in str(e.value) and "9fb629c4189551a2d022fa330f9573f3" in str(e.value)
    assert leftovers(root) == []


def test_interrupted_download_leaves_no_file(tmp_path):
    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("connection reset (simulated)")
            return b"x" * 10

    dest = tmp_path / "sub" / "file.bin"
    with pytest.raises(ConnectionResetError):
        _files._write_verified(dest, _files._url_chunks(Broken()), "0" * 32, "test")
    assert leftovers(tmp_path) == []


def make_cifar_archive(shared: Path, path: Path, n: int = 30) -> tuple[bytes, bytes]:
    """A stand-in binary-version archive holding a short test batch (plus a member trying to
    escape the root, which must be ignored)."""
    recs = cifar_records(shared, "test_batch.bin", n)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("cifar-10-batches-bin/test_batch.bin", recs), ("../escaped.bin", b"evil"),
                           ("cifar-10-batches-bin/readme.html", b"<html/>")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes(), recs


def test_archive_download_and_extraction(shared_data, tmp_path, monkeypatch):
    ref = load_dataset("cifar10", "test", root=shared_data, download=False, limit=30)
    src = tmp_path / "mirror"
    src.mkdir()
    archive, recs = make_cifar_archive(shared_data, src / "cifar-10-binary.tar.gz")
    monkeypatch.setitem(_catalog.ARCHIVE_MD5, "cifar-10-binary.tar.gz", md5(archive))
    url = ((src / "cifar-10-binary.tar.gz").as_uri(),)
    changes = {f.relpath: {"urls": url} for f in dataset_info("cifar10").files if f.archive == "cifar-10-binary.tar.gz"}
    changes["cifar-10-batches-bin/test_batch.bin"]["md5"] = md5(recs)
    patch_specs(monkeypatch, "cifar10", changes)
    root = tmp_path / "root"
    d = load_dataset("cifar10", "test", root=root)
    assert len(d) == 30 and torch.equal(d.images, ref.images) and torch.equal(d.labels, ref.labels)
    assert sorted(str(p.relative_to(root)) for p in leftovers(root)) == [
        "cifar-10-batches-bin/test_batch.bin", "cifar-10-binary.tar.gz"]
    assert not (tmp_path / "escaped.bin").exists()
    # an archive placed by hand is verified and unpacked without any network
    root2 = tmp_path / "root2"
    root2.mkdir()
    shutil.copyfile(src / "cifar-10-binary.tar.gz", root2 / "cifar-10-binary.tar.gz")
    no_network(monkeypatch)
    assert len(load_dataset("cifar10", "test", root=root2, download=False)) == 30
    # a corrupted archive is refused
    root3 = tmp_path / "root3"
    root3.mkdir()
    (root3 / "cifar-10-binary.tar.gz").write_bytes(archive[:-10])
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz is corrupted"):
        load_dataset("cifar10", "test", root=root3)
    assert sorted(p.name for p in leftovers(root3)) == ["cifar-10-binary.tar.gz"]


# ---------------------------------------------------------------------------------------------
# SVHN (stand-in .mat files)


def test_svhn_stand_in(tmp_path, monkeypatch):
    import scipy.io

    rng = np.random.default_rng(0)
    folder = tmp_path / "SVHN"
    folder.mkdir()
    changes = {}
    made = {}
    for split, n in (("train", 9), ("test", 6)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        changes[f"SVHN/{split}_32x32.mat"] = {"md5": md5((folder / f"{split}_32x32.mat").read_bytes())}
        made[split] = (x, y)
    with pytest.raises(DataError, match="e26dedcc434d2e4c54c9b2d4a06d8373"):  # default always verifies
        load_dataset("svhn", "train", root=tmp_path, val_size=2, download=False)
    patch_specs(monkeypatch, "svhn", changes)
    test = load_dataset("svhn", "test", root=tmp_path, download=False)
    x, y = made["test"]
    assert test.images.shape == (6, 3, 32, 32) and test.images.dtype == torch.float32
    assert int(test.labels[0]) == 0 and test.labels.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert torch.equal(test.images[2] * 255, torch.from_numpy(x[:, :, :, 2].transpose(2, 0, 1).astype(np.float32)))
    train = load_dataset("svhn", "train", root=tmp_path, val_size=2, download=False)
    val = load_dataset("svhn", "val", root=tmp_path, val_size=2, download=False)
    assert (len(train), len(val)) == (7, 2)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("svhn", "train", root=tmp_path, download=False)  # default 5000 > 9 stand-in images


def svhn_stand_in(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 40, n_test: int = 8,
                  val_size: int = 4) -> None:
    """``root/SVHN``: SVHN-format .mat files of random images (labels 1-10, 10 for the digit 0) that pass the md5
    check (patched), and a ``val_size``-image val split."""
    import scipy.io

    rng = np.random.default_rng(0)
    folder = root / "SVHN"
    folder.mkdir(parents=True)
    changes = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        changes[f"SVHN/{split}_32x32.mat"] = {"md5": md5((folder / f"{split}_32x32.mat").read_bytes())}
    patch_specs(monkeypatch, "svhn", changes, default_val_size=val_size)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet (a fake tree of JPEGs written by Pillow)

TINY_WNIDS = ("n01443537", "n09999999", "n02124075")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_VAL = (("val_0.JPEG", 2), ("val_1.JPEG", 0), ("val_2.JPEG", 1))  # file, class (line of wnids.txt)


def _jpeg(path: Path, rng: np.random.Generator, grey: bool = False, side: int = 64) -> np.ndarray:
    """Write a random JPEG; returns Pillow's own reading of it in RGB, uint8 (3, side, side)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (side, side) if grey else (side, side, 3), dtype=np.uint8)).save(path, "JPEG")
    with Image.open(path) as im:
        assert im.mode == ("L" if grey else "RGB")
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def make_tiny_tree(root: Path) -> dict[str, np.ndarray]:
    """``root/tiny-imagenet-200``: 3 wnids x 2 train images, 3 val images, one grey image in each part; words.txt
    names two of the wnids. Returns the expected uint8 images of each part."""
    rng = np.random.default_rng(0)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\n"
                                    "n02124075\tEgyptian cat\n")
    train = [_jpeg(base / f"train/{w}/images/{w}_{i}.JPEG", rng, grey=(k, i) == (1, 1))
             for k, w in enumerate(TINY_WNIDS) for i in range(2)]
    (base / f"train/{TINY_WNIDS[0]}/{TINY_WNIDS[0]}_boxes.txt").write_text("n01443537_0.JPEG\t0\t0\t63\t63\n")
    test = [_jpeg(base / "val/images" / name, rng, grey=name == "val_2.JPEG") for name, _ in TINY_VAL]
    (base / "val/val_annotations.txt").write_text("".join(f"{name}\t{TINY_WNIDS[c]}\t0\t5\t62\t60\n"
                                                          for name, c in TINY_VAL))
    return {"trainval": np.stack(train), "test": np.stack(test)}


def tiny_stand_in(monkeypatch: pytest.MonkeyPatch, zip_md5: str | None = None) -> None:
    """The catalog's sizes of the fake tree (and the md5 of a zip of it)."""
    patch_specs(monkeypatch, "tiny-imagenet", {"tiny-imagenet-200.zip": {"md5": zip_md5}} if zip_md5 else {},
                num_classes=3, train_size=6, test_size=3, default_val_size=2)


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


def test_tiny_imagenet_folder(tmp_path, monkeypatch):
    tried = no_network(monkeypatch)
    expected = make_tiny_tree(tmp_path)
    tiny_stand_in(monkeypatch)
    test = load_dataset("tiny-imagenet", "test", root=tmp_path)
    assert test.images.shape == (3, 3, 64, 64) and test.images.dtype == torch.float32
    assert float(test.images.min()) >= 0 and float(test.images.max()) <= 1 and float(test.images.max()) > 0.9
    assert test.labels.tolist() == [2, 0, 1]  # val_annotations.txt's wnids, numbered by wnids.txt's lines
    assert np.array_equal(_as_uint8(test.images), expected["test"])
    grey = test.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2]) and grey.std() > 0.1
    assert test.classes == ("goldfish, Carassius auratus", "n09999999", "Egyptian cat")  # words.txt, else the wnid
    trainval = load_dataset("tiny-imagenet", "trainval", root=tmp_path)
    assert trainval.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(_as_uint8(trainval.images), expected["trainval"])
    train, val = (load_dataset("tiny-imagenet", split, root=tmp_path) for split in ("train", "val"))
    assert (len(train), len(val)) == (4, 2)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    (tmp_path / "tiny-imagenet-200" / "words.txt").unlink()
    assert load_dataset("tiny-imagenet", "test", root=tmp_path).classes == TINY_WNIDS
    assert tried == []


def test_tiny_imagenet_cache(tmp_path, monkeypatch, caplog):
    from PIL import Image

    make_tiny_tree(tmp_path)
    tiny_stand_in(monkeypatch)
    first = load_dataset("tiny-imagenet", "test", root=tmp_path)
    cache = tmp_path / "tiny-imagenet-200-decoded" / "test.npz"
    assert [p.name for p in cache.parent.iterdir()] == ["test.npz"]  # no temporary file left
    decoded: list[int] = []
    real = _tiny_imagenet._decode
    monkeypatch.setattr(_tiny_imagenet, "_decode", lambda source, files, size: decoded.append(len(files)) or
                        real(source, files, size))
    assert torch.equal(load_dataset("tiny-imagenet", "test", root=tmp_path).images, first.images)
    assert decoded == []  # read from the cache
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "tiny-imagenet-200/val/images/val_1.JPEG")
    changed = load_dataset("tiny-imagenet", "test", root=tmp_path)
    assert decoded == [3] and float(changed.images[1].max()) < 0.05 and torch.equal(changed.images[0], first.images[0])
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the image array: its CRC-32 no longer matches
    cache.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="maskdefense.data._tiny_imagenet"):
        assert torch.equal(load_dataset("tiny-imagenet", "test", root=tmp_path).images, changed.images)
    assert decoded == [3, 3] and "cannot be read" in caplog.text
    assert torch.equal(load_dataset("tiny-imagenet", "test", root=tmp_path).images, changed.images)
    assert decoded == [3, 3]  # the rewritten cache is good
    # an unwritable cache folder only costs the cache
    shutil.rmtree(cache.parent)
    cache.parent.write_text("a file where the cache folder should be")
    assert torch.equal(load_dataset("tiny-imagenet", "test", root=tmp_path).images, changed.images)
    assert decoded == [3, 3, 3] and "cannot write the cache" in caplog.text


def test_tiny_imagenet_zip(tmp_path, monkeypatch):
    tried = no_network(monkeypatch)
    expected = make_tiny_tree(tmp_path / "tree")
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted((tmp_path / "tree").rglob("*")):
            z.write(p, p.relative_to(tmp_path / "tree").as_posix())
    tiny_stand_in(monkeypatch)
    with pytest.raises(DataError, match=f"tiny-imagenet-200.zip is corrupted.*expected {TINY_MD5}"):
        load_dataset("tiny-imagenet", "test", root=root)  # the md5 is always checked
    tiny_stand_in(monkeypatch, zip_md5=md5((root / "tiny-imagenet-200.zip").read_bytes()))
    for part in ("test", "trainval"):
        d = load_dataset("tiny-imagenet", part, root=root)
        assert np.array_equal(_as_uint8(d.images), expected[part]) and d.classes[0] == "goldfish, Carassius auratus"
    assert d.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # the verified zip is preferred to an extracted folder beside it (here an incomplete one)
    shutil.copytree(tmp_path / "tree" / "tiny-imagenet-200", root / "tiny-imagenet-200")
    (root / "tiny-imagenet-200/val/images/val_0.JPEG").unlink()
    assert load_dataset("tiny-imagenet", "test", root=root).labels.tolist() == [2, 0, 1]
    assert tried == []


def test_tiny_imagenet_missing(tmp_path, monkeypatch):
    tried = no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        load_dataset("tiny-imagenet", "train", root=tmp_path)
    msg = str(e.value)
    for s in (str(tmp_path / "tiny-imagenet-200.zip"), TINY_MD5, TINY_URL, "Download failed",
              f"Or extract the zip in {tmp_path}: the folder {tmp_path / 'tiny-imagenet-200'} (wnids.txt"):
        assert s in msg, s
    assert tried == [TINY_URL] and leftovers(tmp_path) == []


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize("split, damage, named", [
    ("trainval", lambda b: (b / "train/n09999999/images/n09999999_1.JPEG").unlink(),
     "train/n09999999/images/n09999999_1.JPEG is missing"),
    ("test", lambda b: (b / "val/val_annotations.txt").unlink(), "val/val_annotations.txt is missing"),
    ("test", lambda b: (b / "val/images/val_0.JPEG").write_bytes(b"not a JPEG"), "val_0.JPEG is not a readable JPEG"),
    ("test", lambda b: (b / "val/images/val_1.JPEG").write_bytes((b / "val/images/val_1.JPEG").read_bytes()[:300]),
     "val_1.JPEG is not a readable JPEG"),
    ("test", lambda b: _jpeg(b / "val/images/val_1.JPEG", np.random.default_rng(1), side=32),
     "val_1.JPEG is 32x32, expected 64x64"),
    ("test", lambda b: _rewrite(b / "val/val_annotations.txt", "val_1.JPEG\tn01443537", "val_1.JPEG\tn00000001"),
     "val_annotations.txt line 2"),
    ("test", lambda b: _rewrite(b / "val/val_annotations.txt", "val_0.JPEG", "../../wnids.txt"),
     "val_annotations.txt line 1"),
    ("test", lambda b: _rewrite(b / "val/val_annotations.txt", "val_2.JPEG\tn09999999\t0\t5\t62\t60\n", ""),
     "val_annotations.txt annotates 2 images"),
    ("trainval", lambda b: _rewrite(b / "wnids.txt", "n02124075", "n01443537"), "wnids.txt holds 3 lines (2 distinct)"),
], ids=["train-file", "annotations", "garbage", "truncated", "size", "unknown-wnid", "path", "count", "wnids"])
def test_tiny_imagenet_damaged_folder(split, damage, named, tmp_path, monkeypatch):
    make_tiny_tree(tmp_path)
    tiny_stand_in(monkeypatch)
    damage(tmp_path / "tiny-imagenet-200")
    with pytest.raises(DataError) as e:
        load_dataset("tiny-imagenet", split, root=tmp_path)
    msg = str(e.value)
    assert named in msg and "\n" not in msg, msg  # one line naming the file ...
    assert f"extract the official tiny-imagenet-200.zip (md5 {TINY_MD5}) from {TINY_URL}" in msg  # ... and the fix
    assert not (tmp_path / "tiny-imagenet-200-decoded").exists()
