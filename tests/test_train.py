import pytest
import torch

from maskdefense.checkpoint import CheckpointError, load_model
from maskdefense.data import load_dataset
from maskdefense.models import create_model
from maskdefense.training.loop import TrainConfig, Trainer, accuracy


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val")


def _trainer(digits, out, epochs, transform=None, lr=1e-3, schedule="none"):
    train, val = digits
    torch.manual_seed(0)
    model = create_model("digits_cnn", width=8)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=0, schedule=schedule)
    return Trainer(model, train.tensors(), val.tensors(), cfg, transform=transform, out_dir=out, progress=False,
                   log=lambda s: None)


def test_short_training_measurably_improves_accuracy(digits, tmp_path):
    t = _trainer(digits, tmp_path, epochs=3)
    before = accuracy(t.model, *digits[1].tensors())
    hist = t.fit()
    after = accuracy(t.model, *digits[1].tensors())
    assert before < 0.3
    assert after > 0.85, after
    assert hist[-1].val_accuracy == pytest.approx(after)
    model, meta = load_model(tmp_path / "model.safetensors")
    assert meta["epochs"] == 3 and meta["val_accuracy"] == pytest.approx(after)
    assert meta["git_commit"] is None or isinstance(meta["git_commit"], str)
    assert "torch" in meta["versions"]


class _Boom(Exception):
    pass


class _CountingTransform:
    """Identity transform that raises after a given number of calls (simulates an interruption)."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, x, g):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise _Boom()
        return x

    def config(self):
        return {"transform": "counting"}


def test_interrupted_run_resumes_to_the_same_weights(digits, tmp_path):
    ref = _trainer(digits, tmp_path / "ref", epochs=3, transform=_CountingTransform())
    ref.fit()
    steps_per_epoch = -(-len(digits[0]) // 64)
    broken = _trainer(digits, tmp_path / "run", epochs=3, transform=_CountingTransform(fail_at=2 * steps_per_epoch + 3))
    with pytest.raises(_Boom):
        broken.fit()
    assert len(broken.history) == 2
    again = _trainer(digits, tmp_path / "run", epochs=3, transform=_CountingTransform())
    again.fit()
    assert again.transform.calls == steps_per_epoch  # only the third epoch was run again
    for a, b in zip(ref.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_with_another_configuration_is_refused(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=1).fit()
    with pytest.raises(CheckpointError, match="another configuration"):
        _trainer(digits, tmp_path, epochs=2, lr=1e-2).fit()


def test_a_run_grows_unless_its_schedule_depends_on_its_length(digits, tmp_path):
    """Without a schedule a finished run can be extended; a cosine schedule spans the run's epochs, so
    extending it would restart the learning rate: refused."""
    _trainer(digits, tmp_path / "plain", epochs=1).fit()
    assert len(_trainer(digits, tmp_path / "plain", epochs=2).fit()) == 2
    _trainer(digits, tmp_path / "cos", epochs=1, schedule="cosine").fit()
    with pytest.raises(CheckpointError, match="another configuration"):
        _trainer(digits, tmp_path / "cos", epochs=2, schedule="cosine").fit()


def test_bad_training_data_is_rejected(digits):
    x, y = digits[0].tensors()
    model = create_model("digits_cnn")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Trainer(model, (x * 16, y))
    with pytest.raises(ValueError, match="labels"):
        Trainer(model, (x, y[:-1]))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_training_from_scratch_is_reproducible_across_global_rng_states(tmp_path):
    from maskdefense.training.loop import train_on_dataset

    weights = []
    for i, noise in enumerate((123, 456)):
        torch.manual_seed(noise)  # whatever ran before must not change the result
        model, _ = train_on_dataset("digits", "digits_cnn", TrainConfig(epochs=1, batch_size=64, seed=0),
                                    out_dir=tmp_path / str(i), model_kwargs={"width": 4}, progress=False,
                                    log=lambda s: None)
        weights.append(model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


# ---- the training state and the checkpoint stay consistent; runs are deterministic; one writer per folder


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_while_writing_the_training_state_does_not_train_an_epoch_twice(digits, tmp_path, monkeypatch):
    """The old trainer renamed the model file before the state file: a kill between the two resumed
    "after epoch 2" on epoch-3 weights and trained epoch 3 twice, silently."""
    from maskdefense.training import loop

    ref = _trainer(digits, tmp_path / "ref", epochs=3)
    ref.fit()
    real_save_state = loop.save_state
    calls = {"n": 0}

    def dying_save_state(path, state):  # killed while writing the epoch-3 training state
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_save_state(path, state)

    monkeypatch.setattr(loop, "save_state", dying_save_state)
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path / "run", epochs=3).fit()
    monkeypatch.undo()
    again = _trainer(digits, tmp_path / "run", epochs=3)
    again.fit()
    assert _same(_weights(again.model), _weights(ref.model))
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()


def test_kill_between_state_and_checkpoint_writes_repairs_the_checkpoint(digits, tmp_path, monkeypatch):
    from maskdefense.training import loop

    ref = _trainer(digits, tmp_path / "ref", epochs=2)
    ref.fit()
    real = loop.Trainer._export
    calls = {"n": 0}

    def dying_export(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the epoch-2 state is written, its checkpoint is not
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(loop.Trainer, "_export", dying_export)
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path / "run", epochs=2).fit()
    monkeypatch.undo()
    from maskdefense.checkpoint import read_metadata

    assert read_metadata(tmp_path / "run" / "model.safetensors")["epochs"] == 1
    logs = []
    again = _trainer(digits, tmp_path / "run", epochs=2)
    again.log = logs.append
    again.fit()
    assert any("writing it again" in m for m in logs), logs
    assert read_metadata(tmp_path / "run" / "model.safetensors")["epochs"] == 2
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()


def test_identical_trainings_write_byte_identical_checkpoints(digits, tmp_path):
    import json

    for name in ("a", "b"):
        _trainer(digits, tmp_path / name, epochs=2, transform=GridMaskT()).fit()
    a, b = (tmp_path / n / "model.safetensors" for n in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    side = json.loads((tmp_path / "a" / "model.json").read_text())
    assert {"command", "started", "wall_time_s"} <= set(side) and "seconds" in side["history"][0]
    from maskdefense.checkpoint import read_metadata

    record = read_metadata(a)
    assert not {"command", "started", "wall_time_s", "machine"} & set(record)
    assert "seconds" not in record["history"][0] and record["weights_sha256"]


def GridMaskT():
    from maskdefense.ops.masking import GridMask

    return GridMask(2, 0.5)


def test_asking_for_fewer_epochs_than_the_folder_holds_is_refused(digits, tmp_path):
    _trainer(digits, tmp_path, epochs=2).fit()
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="trained for 2 epochs, more than the 1 asked for"):
        _trainer(digits, tmp_path, epochs=1).fit()
    assert (tmp_path / "model.safetensors").read_bytes() == before
    logs = []
    t = _trainer(digits, tmp_path, epochs=2)
    t.log = logs.append
    t.fit()
    assert any("nothing to train" in m for m in logs)


def test_a_busy_output_folder_is_refused_before_any_write(digits, tmp_path):
    from maskdefense.rundir import BusyError, exclusive
    from maskdefense.training.loop import train_on_dataset

    with exclusive(tmp_path, "train"):
        with pytest.raises(BusyError, match="in use"):
            _trainer(digits, tmp_path, epochs=1).fit()
        with pytest.raises(BusyError):
            train_on_dataset("digits", "digits_cnn", TrainConfig(epochs=1), out_dir=tmp_path, progress=False,
                             log=lambda s: None)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "train_state.pt").exists()
    _trainer(digits, tmp_path, epochs=1).fit()  # free again
    assert (tmp_path / "model.safetensors").exists()
