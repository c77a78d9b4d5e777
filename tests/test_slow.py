"""Slow end-to-end checks, left out of the default run: ``pytest -m slow``."""

import pytest

from maskdefense.checkpoint import load_model
from maskdefense.training.loop import TrainConfig, accuracy, train_on_dataset


@pytest.mark.slow
def test_lenet_reaches_98_5_percent_on_real_mnist(shared_data, tmp_path):
    model, meta = train_on_dataset("mnist", "lenet5", TrainConfig(epochs=5, seed=0), out_dir=tmp_path,
                                   data_root=shared_data, progress=False, log=lambda s: None)
    assert meta["test_accuracy"] >= 0.985, meta["test_accuracy"]
    loaded, meta2 = load_model(tmp_path / "model.safetensors")
    assert meta2["test_accuracy"] == meta["test_accuracy"]
    from maskdefense.data import load_dataset

    test = load_dataset("mnist", "test", root=shared_data)
    assert accuracy(loaded, *test.tensors()) == pytest.approx(meta["test_accuracy"])
