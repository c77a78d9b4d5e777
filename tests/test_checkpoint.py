import json
import os
import pickle

import pytest
import torch

from maskdefense.checkpoint import (
    CheckpointError, load_components, load_into, load_model, load_state_dict_file, read_metadata, save_checkpoint,
    save_components, save_state,
)
from maskdefense.models import UnknownNameError, create_model


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


# ---- weights hash, several networks, old checkpoints


def _flip_last_weight_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: still a valid safetensors file
    path.write_bytes(bytes(data))


def test_a_flipped_weight_byte_is_refused(tmp_path):
    path = save_checkpoint(create_model("lenet5"), tmp_path / "m.safetensors", {})
    load_model(path)
    _flip_last_weight_byte(path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_into(create_model("lenet5"), path)


def _parts():
    torch.manual_seed(0)
    return {"reformer": create_model("digits_cnn", width=4), "inpainter": torch.nn.Conv2d(1, 1, 3, padding=1),
            "classifier": create_model("lenet5")}


def test_several_networks_are_one_artefact_with_named_components(tmp_path):
    parts = _parts()
    path = save_components(parts, tmp_path / "d.safetensors", {"defense": "test"})
    record = read_metadata(path)
    assert sorted(record["components"]) == ["classifier", "inpainter", "reformer"] and record["defense"] == "test"
    assert json.loads((tmp_path / "d.json").read_text())["components"] == record["components"]
    # rebuilt from their records where registered; an unregistered network is passed in
    with pytest.raises(CheckpointError, match="'inpainter'"):
        load_components(path)
    fresh = {"reformer": create_model("digits_cnn", width=4), "inpainter": torch.nn.Conv2d(1, 1, 3, padding=1),
             "classifier": create_model("lenet5")}
    nets, meta = load_components(path, fresh)
    for k in parts:
        for a, b in zip(parts[k].state_dict().values(), nets[k].state_dict().values()):
            assert torch.equal(a, b)
    assert meta["sha256"] and not nets["reformer"].training
    model, _ = load_model(path, component="classifier")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), parts["classifier"].state_dict().values()))


def test_a_missing_or_mismatched_component_is_refused_by_name(tmp_path):
    parts = _parts()
    path = save_components({k: v for k, v in parts.items() if k != "inpainter"}, tmp_path / "d.safetensors", {})
    with pytest.raises(CheckpointError, match="no component 'inpainter'"):
        load_components(path, _parts())
    with pytest.raises(CheckpointError, match="not asked for"):
        load_components(path, {"reformer": create_model("digits_cnn", width=4)})
    wrong = {"reformer": create_model("digits_cnn", width=8), "classifier": create_model("lenet5")}
    with pytest.raises(CheckpointError, match="component 'reformer'.*shape mismatch"):
        load_components(path, wrong)
    other = {"reformer": create_model("lenet5"), "classifier": create_model("lenet5")}
    with pytest.raises(CheckpointError, match="component 'reformer'.*'digits_cnn' model, not 'lenet5'"):
        load_components(path, other)
    with pytest.raises(CheckpointError, match="no component 'model'"):
        load_model(path)
    _flip_last_weight_byte(path)
    with pytest.raises(CheckpointError, match="component"):
        load_components(path)


def test_single_model_checkpoints_without_a_weights_hash_still_load(tmp_path):
    """Checkpoints written before the weights hash existed (results reference them) keep loading; their
    sidecar's file hash is checked instead."""
    import hashlib

    from safetensors.torch import save

    m = create_model("lenet5").eval()
    record = {"format": "maskdefense-checkpoint-v1", "arch": "lenet5", "arch_kwargs": {}, "epochs": 5}
    blob = save({k: v.contiguous() for k, v in m.state_dict().items()}, metadata={"maskdefense": json.dumps(record)})
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    (tmp_path / "model.json").write_text(json.dumps({**record, "sha256": hashlib.sha256(blob).hexdigest()}))
    loaded, meta = load_model(path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), m(x)) and meta["epochs"] == 5
    _flip_last_weight_byte(path)
    with pytest.raises(CheckpointError, match="model.json"):
        load_model(path)
    (tmp_path / "model.json").unlink()  # nothing to check against: loads as before
    load_model(path)


def test_components_never_execute_code(tmp_path):
    """A component name or architecture in the record is only looked up in the model registry."""
    path = save_components({"a": create_model("lenet5")}, tmp_path / "d.safetensors", {})
    data = path.read_bytes()
    assert b'\\"arch\\":\\"lenet5\\"' in data
    path.write_bytes(data.replace(b'\\"arch\\":\\"lenet5\\"', b'\\"arch\\":\\"os.sys\\"'))
    with pytest.raises(UnknownNameError, match="os.sys"):
        load_components(path)
