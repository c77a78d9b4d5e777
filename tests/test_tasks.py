"""Training tasks on the 8x8 digits, each in seconds: every assertion is a property the task must have
(it learns, it alternates, it is robust, its frozen network stays frozen, it resumes exactly)."""

import pytest
import torch
from torch import nn

from maskdefense.checkpoint import load_components, load_model, weights_sha256
from maskdefense.data import load_dataset
from maskdefense.models import create_model
from maskdefense.ops.masking import GridMask
from maskdefense.training.hooks import ParsevalRetraction
from maskdefense.training.loop import TrainConfig, Trainer, accuracy
from maskdefense.training.tasks import (
    AdversarialTask, AlternatingTask, ClassificationTask, DenoiserTask, ReconstructionTask, pgd_linf,
)
from maskdefense.training.transforms import GaussianNoise, augment


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val"), load_dataset("digits", "test")


def _net(seed=0):
    torch.manual_seed(seed)
    return create_model("digits_cnn", width=8)


def _fit(task, digits, out=None, epochs=3, batch_size=64, lr=3e-3, **kw):
    train, val, _ = digits
    t = Trainer(task, train.tensors(), val.tensors(), TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, **kw),
                out_dir=out, progress=False, log=lambda s: None)
    return t, t.fit()


class AE(nn.Module):
    """A tiny convolutional autoencoder for 8x8 images (output in [0, 1])."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


# ---- classification --------------------------------------------------------------------------------


def test_classification_with_grid_masking_learns_and_records_its_transform(digits, tmp_path):
    model = _net()
    before = accuracy(model, *digits[2].tensors())
    t, hist = _fit(ClassificationTask(model, transform=GridMask(2, 0.25)), digits, tmp_path, epochs=4)
    after = accuracy(model, *digits[2].tensors())
    assert before < 0.3 and after > 0.8, (before, after)
    assert hist[-1].train_loss < hist[0].train_loss
    loaded, meta = load_model(tmp_path / "model.safetensors")
    assert meta["transform"] == {"transform": "grid_mask", "cell": 2, "rate": 0.25, "fill": "black", "exact": False}
    assert meta["task"]["task"] == "classification"
    assert accuracy(loaded, *digits[2].tensors()) == pytest.approx(after)


# ---- reconstruction --------------------------------------------------------------------------------


@pytest.mark.parametrize("corrupt", [GaussianNoise(0.3), GridMask(2, 0.25)], ids=["denoise", "inpaint"])
def test_reconstruction_error_drops_below_the_corrupted_input(digits, tmp_path, corrupt):
    torch.manual_seed(0)
    ae = AE()
    _, hist = _fit(ReconstructionTask(ae, corrupt), digits, tmp_path, epochs=4, batch_size=32)
    first, last = hist[0].val, hist[-1].val
    assert last["mse"] < first["mse"]
    assert last["mse"] < 0.8 * last["input_mse"], last  # it restores: better than the corrupted input
    assert hist[-1].train_accuracy is None and hist[-1].train_loss < hist[0].train_loss
    # the network is component "model" of a one-network checkpoint; an unregistered class is loaded by passing it
    nets, meta = load_components(tmp_path / "model.safetensors", {"model": AE()})
    x = digits[1].images[:8]
    assert torch.equal(nets["model"](x), ae.eval()(x))
    assert meta["task"]["corrupt"] == corrupt.config()


# ---- alternation -----------------------------------------------------------------------------------


class Masker(nn.Module):
    """Soft keep-mask of each pixel, sigmoid of a small conv net."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def classifier_loss(nets, x, y, g):
    logits = nets["classifier"](x * nets["masker"](x))
    return nn.functional.cross_entropy(logits, y), {"accuracy": (logits.detach().argmax(1) == y).float().mean()}


def masker_loss(nets, x, y, g):
    m = nets["masker"](x)
    loss = nn.functional.cross_entropy(nets["classifier"](x * m), y) + 0.1 * m.mean()
    return loss, {"kept": m.detach().mean()}


def masked_accuracy(nets, val, g):
    x, y = val
    return {"accuracy": float((nets["classifier"](x * nets["masker"](x)).argmax(1) == y).float().mean())}


class Recorder:
    """Post-step hook: records the phase and the weights hash of every network; raises at step ``fail_at``."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, task, phase):
        self.calls.append((phase, {k: weights_sha256(n.state_dict()) for k, n in task.networks.items()}))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt

    def config(self):
        return {"hook": "recorder"}


def _alternating(hook):
    torch.manual_seed(0)
    nets = {"classifier": create_model("digits_cnn", width=8), "masker": Masker()}
    return AlternatingTask(nets, {"classifier": classifier_loss, "masker": masker_loss}, validate=masked_accuracy,
                           hooks=[hook])


def test_alternation_runs_one_phase_per_network_and_updates_only_that_network(digits, tmp_path):
    rec = Recorder()
    task = _alternating(rec)
    before = {k: weights_sha256(n.state_dict()) for k, n in task.networks.items()}
    t, hist = _fit(task, digits, tmp_path, epochs=2)
    s = t.steps_per_epoch
    assert [p for p, _ in rec.calls] == (["classifier"] * s + ["masker"] * s) * 2
    prev = before
    for phase, hashes in rec.calls:
        other = "masker" if phase == "classifier" else "classifier"
        assert hashes[phase] != prev[phase], "the phase's network was not updated"
        assert hashes[other] == prev[other], f"phase {phase} changed {other}"
        prev = hashes
    assert set(hist[-1].metrics) == {"classifier/loss", "classifier/accuracy", "masker/loss", "masker/kept"}
    assert hist[-1].metrics["classifier/loss"] < hist[0].metrics["classifier/loss"]
    assert hist[-1].val_accuracy > 0.5
    # both networks are one artefact with named components
    fresh = {"classifier": create_model("digits_cnn", width=8), "masker": Masker()}
    nets, meta = load_components(tmp_path / "model.safetensors", fresh)
    for k, n in task.networks.items():
        assert weights_sha256(nets[k].state_dict()) == weights_sha256(n.state_dict())
    assert sorted(meta["components"]) == ["classifier", "masker"]


def test_alternating_run_killed_mid_phase_resumes_to_identical_weights(digits, tmp_path):
    ref = _alternating(Recorder())
    t, _ = _fit(ref, digits, tmp_path / "ref", epochs=2)
    s = t.steps_per_epoch
    with pytest.raises(KeyboardInterrupt):  # killed in the masker phase of epoch 2
        _fit(_alternating(Recorder(fail_at=3 * s + 5)), digits, tmp_path / "run", epochs=2)
    rec = Recorder()
    again = _alternating(rec)
    _fit(again, digits, tmp_path / "run", epochs=2)
    assert len(rec.calls) == 2 * s  # only epoch 2 was run again
    for k in ref.networks:
        assert weights_sha256(ref.networks[k].state_dict()) == weights_sha256(again.networks[k].state_dict()), k
    assert (tmp_path / "ref" / "model.safetensors").read_bytes() == (tmp_path / "run" / "model.safetensors").read_bytes()


# ---- adversarial training --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pgd", "fast"])
def test_adversarial_training_is_more_robust_than_plain_training(digits, mode):
    eps = 0.2
    test = digits[2]
    plain, robust = _net(), _net()
    _fit(plain, digits, epochs=5)
    _fit(AdversarialTask(robust, eps, mode=mode, steps=5), digits, epochs=5)

    def robust_accuracy(m):
        m.eval()
        adv = pgd_linf(m, test.images, test.labels, eps, eps / 4, 20, torch.Generator().manual_seed(1))
        assert float((adv - test.images).abs().max()) <= eps + 1e-6
        return accuracy(m, adv, test.labels)

    acc_plain, acc_robust = robust_accuracy(plain), robust_accuracy(robust)
    assert acc_robust > acc_plain + 0.2, (acc_plain, acc_robust)
    assert accuracy(robust, *test.tensors()) > 0.8  # still a classifier


def test_pgd_stays_in_the_ball_and_the_image_range_and_leaves_parameter_gradients_alone():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    adv = pgd_linf(m, x, y, 0.1, 0.05, 5, torch.Generator().manual_seed(0))
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert all(p.grad is None for p in m.parameters())
    loss = nn.functional.cross_entropy
    assert loss(m(adv), y) > loss(m(x), y)


# ---- post-step hook and extra loss parameters ------------------------------------------------------


def _singular_value_deviation(model, hook):
    """Per layer, the largest deviation of the singular values of the unfolded weight from the hook's target."""
    return [float((hook.scale(m) * torch.linalg.svdvals(m.weight.detach().flatten(1)) - 1).abs().max())
            for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("conv_scaling", [True, False])
def test_parseval_retraction_runs_after_every_step_and_pulls_weights_towards_parseval(digits, conv_scaling):
    plain, hooked = _net(), _net()
    _fit(plain, digits, epochs=3, lr=1e-3)
    rec = Recorder()
    hook = ParsevalRetraction(0.01, conv_scaling=conv_scaling)
    t, _ = _fit(ClassificationTask(hooked, hooks=[hook, rec]), digits, epochs=3, lr=1e-3)
    assert len(rec.calls) == 3 * t.steps_per_epoch
    dev_plain, dev_hooked = _singular_value_deviation(plain, hook), _singular_value_deviation(hooked, hook)
    assert all(h < p for h, p in zip(dev_hooked, dev_plain)), (dev_hooked, dev_plain)


class CentreLoss(nn.Module):
    """A learned centre per class for the logits, pulled together with them (a PCL-like extra term)."""

    def __init__(self, classes=10, weight=0.01):
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(classes, classes))
        self.weight = weight

    def forward(self, x, logits, y):
        return self.weight * (logits - self.centres[y]).pow(2).sum(1).mean()


def test_extra_loss_parameters_are_trained_and_checkpointed(digits, tmp_path):
    extra = CentreLoss()
    model = _net()
    _fit(ClassificationTask(model, extra=extra), digits, tmp_path, epochs=2)
    assert float(extra.centres.detach().abs().max()) > 0.1  # trained away from zero
    nets, meta = load_components(tmp_path / "model.safetensors",
                                 {"model": create_model("digits_cnn", width=8), "extra": CentreLoss()})
    assert torch.equal(nets["extra"].centres, extra.centres.detach())
    loaded, _ = load_model(tmp_path / "model.safetensors")  # the classifier alone, for evaluation
    assert torch.equal(loaded(digits[2].images), model.eval()(digits[2].images))


# ---- a network trained through a frozen one --------------------------------------------------------


def test_denoiser_trained_through_a_frozen_classifier_helps_it_and_leaves_it_unchanged(digits, tmp_path):
    f = _net()
    _fit(f, digits, epochs=4)
    frozen = {k: v.clone() for k, v in f.state_dict().items()}
    f.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    denoiser = AE()
    sigma = 0.5
    _fit(DenoiserTask(denoiser, f, sigma), digits, tmp_path, epochs=4, batch_size=32)
    assert all(torch.equal(frozen[k], v) for k, v in f.state_dict().items()), "the frozen classifier changed"
    assert all(p.grad is None and p.requires_grad for p in f.parameters())
    x, y = digits[2].tensors()
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        acc_noisy = float((f(noisy).argmax(1) == y).float().mean())
        acc_denoised = float((f(denoiser(noisy)).argmax(1) == y).float().mean())
    assert acc_denoised > acc_noisy + 0.05, (acc_noisy, acc_denoised)
    meta = load_components(tmp_path / "model.safetensors",
                           {"denoiser": AE(), "classifier": create_model("digits_cnn", width=8)})[1]
    assert sorted(meta["components"]) == ["classifier", "denoiser"] and meta["task"]["sigma"] == sigma


# ---- data augmentation -----------------------------------------------------------------------------


def test_random_crop_shifts_each_image_within_the_padding():
    x = torch.rand(64, 3, 6, 6)
    out = augment(x, torch.Generator().manual_seed(0), crop_padding=1)
    pad = nn.functional.pad(x, (1, 1, 1, 1))
    shifts = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(out[i], pad[i, :, dy:dy + 6, dx:dx + 6])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) == 9  # every offset occurs among 64 images


def test_flip_mirrors_about_half_the_images_and_augmentation_is_seeded_and_off_by_default(digits):
    x = digits[0].images[:200]
    out = augment(x, torch.Generator().manual_seed(0), hflip=True)
    flipped = [bool(torch.equal(o, xi.flip(2))) and not torch.equal(o, xi) for o, xi in zip(out, x)]
    same = [bool(torch.equal(o, xi)) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and 60 < sum(flipped) < 140
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(0), hflip=True))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert augment(x, g) is x and torch.equal(g.get_state(), state)
    assert TrainConfig().crop_padding == 0 and TrainConfig().hflip is False


def test_augmentation_option_reaches_training(digits):
    a, b = _net(), _net()
    _fit(a, digits, epochs=1)
    _fit(b, digits, epochs=1, crop_padding=1, hflip=True)
    assert weights_sha256(a.state_dict()) != weights_sha256(b.state_dict())
