"""``ensure_model`` reuses a trained model only for exactly the same training configuration and seed."""

import pytest
import torch

from maskdefense.checkpoint import CheckpointError, read_metadata
from maskdefense.experiments.common import ensure_model

SMALL = {"epochs": 1, "model_kwargs": {"width": 4}}


def _weights_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_changing_rate_cell_model_or_seed_trains_a_new_model(tmp_path):
    quiet = {"log": lambda s: None, "progress": False}
    base, meta = ensure_model("mad-digits", tmp_path, train_rate=0.5, **SMALL, **quiet)
    again, meta_again = ensure_model("mad-digits", tmp_path, train_rate=0.5, **SMALL, **quiet)
    assert meta_again["sha256"] == meta["sha256"]  # reused, not retrained
    other_rate, m_rate = ensure_model("mad-digits", tmp_path, train_rate=0.25, **SMALL, **quiet)
    assert m_rate["transform"]["rate"] == 0.25 and m_rate["sha256"] != meta["sha256"]
    other_cell, m_cell = ensure_model("mad-digits", tmp_path, train_rate=0.5, train_cell=4, **SMALL, **quiet)
    assert m_cell["transform"]["cell"] == 4
    wider, m_wide = ensure_model("mad-digits", tmp_path, train_rate=0.5, epochs=1, model_kwargs={"width": 6}, **quiet)
    assert m_wide["arch_kwargs"]["width"] == 6
    seeded, m_seed = ensure_model("mad-digits", tmp_path, seed=1, train_rate=0.5, **SMALL, **quiet)
    assert m_seed["seed"] == 1 and m_seed["train_config"]["seed"] == 1 and not _weights_equal(seeded, base)
    assert meta["seed"] == 0
    # the first model is still there, untouched
    _, meta_first = ensure_model("mad-digits", tmp_path, train_rate=0.5, **SMALL, **quiet)
    assert meta_first["sha256"] == meta["sha256"]
    assert len([p for p in tmp_path.iterdir() if (p / "model.safetensors").exists()]) == 5


def test_a_checkpoint_of_another_configuration_in_the_folder_is_refused(tmp_path):
    quiet = {"log": lambda s: None, "progress": False}
    ensure_model("mad-digits", tmp_path, train_rate=0.5, **SMALL, **quiet)
    ensure_model("mad-digits", tmp_path, train_rate=0.25, **SMALL, **quiet)
    folders = {read_metadata(p / "model.safetensors")["training_key"]["transform"]["rate"]: p
               for p in tmp_path.iterdir()}
    # put the rate-0.25 model where the rate-0.5 model belongs
    (folders[0.5] / "model.safetensors").write_bytes((folders[0.25] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="another configuration"):
        ensure_model("mad-digits", tmp_path, train_rate=0.5, **SMALL, **quiet)
