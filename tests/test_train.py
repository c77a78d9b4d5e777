import pytest
import torch

from maskdefense.checkpoint import CheckpointError, load_model
from maskdefense.data import load_dataset
from maskdefense.models import create_model
from maskdefense.training.loop import TrainConfig, Trainer, accuracy


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val")


def _trainer(digits, out, epochs, transform=None, lr=1e-3):
    train, val = digits
    torch.manual_seed(0)
    model = create_model("digits_cnn", width=8)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=0)
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
