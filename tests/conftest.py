"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The offline copy of the official datasets: ``../shared/data`` beside the repository checkout
#: (``/work/shared/data`` when the repository is ``/work/main``; CI runs in a sibling clone).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared official data (MNIST idx files, CIFAR-10 binary batches); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found (expected at ../shared/data beside the repository)")
    return SHARED_DATA
