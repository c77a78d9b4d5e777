"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: The offline copy of the official datasets: ``../shared/data`` beside the repository checkout
#: (``/work/shared/data`` when the repository is ``/work/main``; CI runs in a sibling clone).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared official data (MNIST idx files, CIFAR-10 binary batches); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found (expected at ../shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny models on a shared 2-core machine: one thread avoids oversubscription (two
    contending threads were ~100x slower for a tiny model's gradient step)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def train_digits_linear(n_test: int):
    """A linear classifier trained on the 8x8 digits for a fraction of a second (~95% test accuracy);
    returns ``(model, test_images[:n_test], test_labels[:n_test])``."""
    from torch import nn

    from maskdefense.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.images), train.labels).backward()
        opt.step()
    return model.eval(), test.images[:n_test], test.labels[:n_test]


def patch_specs(monkeypatch: pytest.MonkeyPatch, name: str, changes: dict[str, dict], **info_changes):
    """Replace fields (``md5``, ``urls``) of the FileSpecs named by relpath in ``changes``, so that
    stand-in files made by a test pass the (always active) md5 check, and fields of the DatasetInfo
    (``default_val_size``) by ``info_changes``. Undone after the test."""
    import dataclasses

    from maskdefense.data import _catalog
    from maskdefense.data._types import DatasetName

    key = DatasetName(name)
    info = _catalog._INFOS[key]
    files = tuple(dataclasses.replace(f, **changes.get(f.relpath, {})) for f in info.files)
    assert set(changes) <= {f.relpath for f in info.files}
    new = dataclasses.replace(info, files=files, **info_changes)
    monkeypatch.setitem(_catalog._INFOS, key, new)
    return new
