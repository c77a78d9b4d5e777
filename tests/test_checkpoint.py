import json
import os
import pickle

import pytest
import torch

from maskdefense.checkpoint import (
    CheckpointError, load_into, load_model, load_state_dict_file, read_metadata, save_checkpoint, save_state,
)
from maskdefense.models import create_model


def test_round_trip_rebuilds_architecture_and_weights(tmp_path):
    m = create_model("vgg16", width=0.125).eval()
    path = save_checkpoint(m, tmp_path / "m.safetensors", {"dataset": "cifar10", "seed": 3})
    loaded, meta = load_model(path)
    assert meta["arch"] == "vgg16" and meta["arch_kwargs"]["width"] == 0.125 and meta["seed"] == 3
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(m(x), loaded(x))
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["sha256"] == meta["sha256"]


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    path = save_checkpoint(create_model("lenet5"), tmp_path / "lenet.safetensors", {})
    with pytest.raises(CheckpointError, match="lenet5"):
        load_into(create_model("digits_cnn"), path)
    # same registered name, other width: shapes differ
    p2 = save_checkpoint(create_model("vgg16", width=0.125), tmp_path / "v.safetensors", {})
    other = create_model("vgg16", width=0.25)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_into(other, p2)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickle_carrying_code_is_refused_and_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state": _Evil(str(sentinel))}, f)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_model(evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict_file(evil)
    assert not sentinel.exists()
    # torch.save'd archives carrying code are refused as well
    evil2 = tmp_path / "evil2.pt"
    torch.save({"x": _Evil(str(sentinel))}, evil2)
    with pytest.raises(CheckpointError):
        load_model(evil2)
    with pytest.raises(CheckpointError):
        load_state_dict_file(evil2)
    assert not sentinel.exists()


def test_corrupted_and_missing_checkpoints(tmp_path):
    path = save_checkpoint(create_model("lenet5"), tmp_path / "m.safetensors", {})
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "garbage.safetensors")


def test_training_state_round_trip(tmp_path):
    state = {"epoch": 3, "gen": torch.Generator().manual_seed(1).get_state(), "h": "[1, 2]"}
    save_state(tmp_path / "s.pt", state)
    back = load_state_dict_file(tmp_path / "s.pt")
    assert back["epoch"] == 3 and torch.equal(back["gen"], state["gen"])
