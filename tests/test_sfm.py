"""SFM-Defense: the masker, the loss of Equations 2-5 by hand, Algorithm 1's alternation and input order, the
defense (BPDA through the preprocessing, contract, its gray-box target and what reuse makes of it), and a
seconds-long training on digits whose checkpoint loads back into the defense."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskdefense.checkpoint import load_model, save_checkpoint, weights_sha256
from maskdefense.defenses.base import NoDefense, contract_of
from maskdefense.defenses.registry import build_defense
from maskdefense.defenses.remix import REMIX
from maskdefense.defenses.sfm import MaskedClassifier, SFMDefense
from maskdefense.eval import ConfigMismatchError, evaluate, make_target
from maskdefense.eval.reuse import reevaluate
from maskdefense.models import AttentionUNetMasker, apply_masker, create_model
from maskdefense.ops.squeeze import BitDepth, Median, Squeezer
from maskdefense.spec import SpecError
from maskdefense.training.loop import TrainConfig, Trainer, train_sfm_on_dataset
from maskdefense.training.tasks import SparseMaskTask, sparse_mask_loss

from conftest import train_digits_linear  # noqa: E402


class Quantize(Squeezer):
    """Stand-in preprocessing: rounding to ``levels`` grey levels (zero gradient almost everywhere)."""

    name = "quantize"

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels

    def squeeze(self, x, generator):
        return torch.round(x * self.levels) / self.levels

    def config(self):
        return {"squeezer": "quantize", "levels": self.levels}


class Noisy(Quantize):
    """A randomized stand-in: uniform noise, then rounding."""

    name, randomized = "noisy", True

    def squeeze(self, x, generator):
        return super().squeeze((x + 0.2 * torch.rand(x.shape, generator=generator)).clamp(0, 1), generator)


class Recorded(nn.Module):
    """Records the inputs of the wrapped network."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def _masker(channels=1, size=8, width=4, depth=2):
    torch.manual_seed(0)
    return AttentionUNetMasker(channels, size, width=width, depth=depth)


def _classifier():
    """A tiny classifier with batch norm (its statistics must not move while it is frozen)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


# ---- masker ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, depth", [(32, 4), (64, 4), (8, 3)])
def test_masker_gives_one_channel_in_unit_range_applied_to_every_channel(size, depth):
    m = _masker(3, size, width=4, depth=depth).eval()
    x = torch.rand(2, 3, size, size)
    mask = m(x).detach()
    assert mask.shape == (2, 1, size, size) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    x_masked, mask2 = apply_masker(m, x)
    assert torch.equal(mask2.detach(), mask)
    for c in range(3):
        assert torch.equal(x_masked[:, c].detach(), x[:, c] * mask[:, 0])
    assert create_model("attention_unet", in_channels=3, input_size=size, width=4, depth=depth).spec["name"] == \
        "attention_unet"


def test_masker_refuses_bad_sizes():
    with pytest.raises(ValueError, match="divisible by 8"):
        AttentionUNetMasker(3, 36, width=4, depth=4)
    with pytest.raises(ValueError, match="depth"):
        AttentionUNetMasker(3, 32, depth=1)
    with pytest.raises(Exception, match="3 channel"):
        _masker(3, 8)(torch.rand(1, 1, 8, 8))


# ---- the loss, by hand -----------------------------------------------------------------------------


def test_loss_terms_by_hand():
    # two 1x1x2 images: x = [1, .5] masked by [.5, 1]; x = [.2, .4] masked to 0
    x = torch.tensor([[1.0, 0.5], [0.2, 0.4]]).view(2, 1, 1, 2)
    xm = torch.tensor([[0.5, 0.5], [0.0, 0.0]]).view(2, 1, 1, 2)
    out = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    out_m = torch.tensor([[1.0, 1.0], [-3.0, -4.0]])
    loss, terms = sparse_mask_loss(x, xm, out, out_m, (2.0, 3.0, 5.0))
    sp = (1.0 + 0.0) / 2  # L1 of the masked images
    seg = ((1 - 1 / math.sqrt(2)) + 2.0) / 2  # cos 45 degrees; opposite vectors
    recon = (0.5 + math.sqrt(0.2 ** 2 + 0.4 ** 2)) / 2  # ||x - x~||_2
    assert terms["sparsity"].item() == pytest.approx(sp)
    assert terms["semantic"].item() == pytest.approx(seg)
    assert terms["reconstruction"].item() == pytest.approx(recon)
    assert loss.item() == pytest.approx(2 * sp + 3 * seg + 5 * recon)
    # the L1 and L2 norms over groups of images (Algorithm 1's mini-batch): L1 unchanged, L2 of the group's values
    for group in (2, 5):
        loss, terms = sparse_mask_loss(x, xm, out, out_m, (2.0, 3.0, 5.0), norm_group=group)
        recon_g = math.sqrt(0.5 ** 2 + 0.2 ** 2 + 0.4 ** 2) / 2
        assert terms["sparsity"].item() == pytest.approx(sp) and terms["semantic"].item() == pytest.approx(seg)
        assert terms["reconstruction"].item() == pytest.approx(recon_g)
        assert loss.item() == pytest.approx(2 * sp + 3 * seg + 5 * recon_g)
    # three images in groups of two: {1, 2} and {3}
    x3, xm3 = torch.cat([x, x[:1]]), torch.cat([xm, x[:1]])
    _, terms = sparse_mask_loss(x3, xm3, torch.cat([out, out[:1]]), torch.cat([out_m, out[:1]]), (1, 1, 1), 2)
    assert terms["reconstruction"].item() == pytest.approx((math.sqrt(0.5 ** 2 + 0.2 ** 2 + 0.4 ** 2) + 0) / 3)


def test_per_image_norms_make_the_paper_s_weights_keep_everything(shared_data):
    """Why the presets take the norms over groups of images: on CIFAR-10, per image, w1 * ||x||_1 (what masking
    everything saves) is a fraction of ||x||_2 (what it costs), so m = 1 minimizes sparsity + reconstruction;
    over NORM_GROUP images the two balance (Section 6.2's w1 sits at the edge of its feasible region)."""
    from maskdefense.data import load_dataset
    from maskdefense.papers.sfm import LOSS_WEIGHTS, NORM_GROUP

    x = load_dataset("cifar10", "test", root=shared_data, limit=4 * NORM_GROUP, download=False).images.flatten(1)
    w1, _, w3 = LOSS_WEIGHTS["cifar10"]
    per_image = (w1 * x.abs().sum(1) / (w3 * x.norm(dim=1))).max().item()
    groups = [(w1 * g.abs().sum() / (w3 * g.norm())).item() for g in x.split(NORM_GROUP)]
    assert per_image < 0.25
    assert all(0.8 < r < 1.25 for r in groups), groups
    # the same on the loss: the all-ones mask beats the all-zeros mask per image; over groups they are close
    ones, zeros = x, torch.zeros_like(x)
    o = torch.ones(len(x), 10)
    per = [sparse_mask_loss(x, xm, o, o, (w1, 0.0, w3))[0].item() for xm in (ones, zeros)]
    grp = [sparse_mask_loss(x, xm, o, o, (w1, 0.0, w3), NORM_GROUP)[0].item() for xm in (ones, zeros)]
    assert per[0] < 0.25 * per[1] and 0.8 < grp[0] / grp[1] < 1.25


# ---- Algorithm 1 -----------------------------------------------------------------------------------


class Hashes:
    """Post-step hook: the phase and the state hash (weights and batch-norm statistics) of every network."""

    def __init__(self):
        self.calls = []

    def __call__(self, task, phase):
        self.calls.append((phase, {k: weights_sha256(n.state_dict()) for k, n in task.networks.items()}))


@pytest.mark.parametrize("classifier_input", ["preprocessed", "pipeline"])
def test_each_phase_moves_only_its_network_and_frozen_batchnorm_stays(classifier_input):
    from maskdefense.data import load_dataset

    train = load_dataset("digits", "train", limit=96)
    rec = Hashes()
    task = SparseMaskTask(_classifier(), _masker(), weights=(2.5e-3, 1.0, 1.0), preprocess=Quantize(),
                          classifier_input=classifier_input, hooks=[rec])
    before = {k: weights_sha256(n.state_dict()) for k, n in task.networks.items()}
    t = Trainer(task, train.tensors(), train.tensors(), TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05),
                progress=False, log=lambda s: None)
    hist = t.fit()
    assert [p for p, _ in rec.calls] == ["classifier"] * 3 + ["masker"] * 3
    prev = before
    for phase, hashes in rec.calls:
        other = "masker" if phase == "classifier" else "classifier"
        assert hashes[phase] != prev[phase] and hashes[other] == prev[other], phase
        prev = hashes
    assert set(hist[0].metrics) == {"classifier/loss", "classifier/accuracy", "masker/loss", "masker/sparsity",
                                    "masker/semantic", "masker/reconstruction", "masker/mask_mean"}
    assert set(hist[0].val) == {"accuracy", "mask_mean", "kept"} and 0 < hist[0].val["kept"] < 1


@pytest.mark.parametrize("classifier_input", ["preprocessed", "pipeline"])
def test_algorithm1_preprocesses_before_masking(classifier_input):
    """Both phases of Algorithm 1 see T(x): the classifier phase classifies T(x) (or, as an option, the test-time
    input T(M(x) x)); the masker phase masks T(x) and compares F(T(x)) with F(M(T(x)) T(x))."""
    t = Quantize()
    f, m = Recorded(_classifier()), Recorded(_masker())
    task = SparseMaskTask(f, m, weights=(1.0, 1.0, 1.0), preprocess=t, classifier_input=classifier_input)
    task.setup(TrainConfig(), 1)
    x, y, g = torch.rand(4, 1, 8, 8), torch.arange(4), torch.Generator()
    task.begin_phase("classifier")
    task.loss("classifier", x, y, g)
    if classifier_input == "preprocessed":
        assert m.inputs == [] and torch.equal(f.inputs[0], t(x))
    else:
        assert torch.equal(m.inputs[0], x)
        with torch.no_grad():
            assert torch.equal(f.inputs[0], t(x * m.net(x)))
    f.inputs, m.inputs = [], []
    task.begin_phase("masker")
    loss, terms = task.loss("masker", x, y, g)
    tx = t(x)
    with torch.no_grad():
        txm = tx * m.net(tx)
    assert torch.equal(m.inputs[0], tx) and torch.equal(f.inputs[0], tx) and torch.allclose(f.inputs[1], txm)
    assert terms["sparsity"].item() == pytest.approx(float(txm.abs().sum() / 4), rel=1e-5)


def test_task_refuses_bad_options():
    with pytest.raises(ValueError, match="three finite"):
        SparseMaskTask(_classifier(), _masker(), weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="classifier_input"):
        SparseMaskTask(_classifier(), _masker(), weights=(1.0, 1.0, 1.0), classifier_input="T(x)")
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="norm_group"):
            SparseMaskTask(_classifier(), _masker(), weights=(1.0, 1.0, 1.0), norm_group=bad)


# ---- the defense -----------------------------------------------------------------------------------


def test_defense_gradient_is_bpda_through_the_preprocessing():
    base, masker = _classifier().eval(), _masker().eval()
    t = Quantize()
    d = SFMDefense(base, masker, t)
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    out = d(x)
    z = x * masker(x)
    assert torch.allclose(out, base(t(z)))
    assert torch.equal(d.predict(x.detach()), base(t(z)).argmax(1))
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(out, y), x)
    # by hand: the classifier's gradient at T(z), passed to z unchanged (identity in place of T), then through z(x)
    u = t(z).detach().requires_grad_(True)
    (g_u,) = torch.autograd.grad(nn.functional.cross_entropy(base(u), y), u)
    (expected,) = torch.autograd.grad(z, x, g_u)
    assert torch.allclose(g, expected, atol=1e-6) and float(g.abs().sum()) > 0
    # without BPDA the rounding passes no gradient at all
    (g0,) = torch.autograd.grad(nn.functional.cross_entropy(base(t.squeeze(x * masker(x), None)), y), x)
    assert float(g0.abs().sum()) == 0


def test_contracts():
    base, masker = _classifier().eval(), _masker().eval()
    c = contract_of(SFMDefense(base, masker, Quantize()))
    assert not c.randomized and c.components == ("base", "masker")
    assert c.bpda_steps == ("quantize",) and not c.missing_bpda
    assert contract_of(SFMDefense(base, masker)).bpda_steps == ()
    d = SFMDefense(base, masker, Noisy(), n_grad=5)
    c = contract_of(d)
    assert c.randomized and c.samples_per_forward == 5
    x = torch.rand(2, 1, 8, 8)
    out = d(x)
    assert torch.allclose(out.exp().sum(1), torch.ones(2)) and not torch.equal(out, d(x))
    assert SFMDefense(base, masker, Quantize(), n_grad=5).n_grad == 1  # a deterministic T is not averaged
    assert SFMDefense(base, masker, Noisy()).config() == {"defense": "sfm", "n_grad": 8,
                                                          "squeezers": [{"squeezer": "quantize", "levels": 4}]}


def test_gray_box_target_is_the_base_unless_the_defense_says_otherwise():
    base, masker = _classifier().eval(), _masker().eval()
    for d in (NoDefense(base), build_defense("mad:cell=2,rate=0.5", base), REMIX(base, nn.Identity(), n=2)):
        target, info = make_target(d, "gray-box")
        assert target is base and info["target"] == "base model (no defense)"
    target, info = make_target(SFMDefense(base, masker, Quantize()), "gray-box")
    assert isinstance(target, MaskedClassifier) and target.masker is masker and target.base is base
    assert info["target"] == "masker and base model (no preprocessing)"
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(target(x), base(x * masker(x)))


def test_reuse_refuses_gray_box_examples_made_against_another_target(tmp_path):
    model, x, y = train_digits_linear(16)
    masker = _masker().eval()
    src = tmp_path / "plain"
    evaluate(model, (x, y), "fgsm-linf:eps=0.1", "gray-box", out_dir=src, sanity=None, batch_size=16, progress=False,
             save_adversarial=True)
    with pytest.raises(ConfigMismatchError, match="gray-box examples .* base model .* masker and base model"):
        reevaluate(SFMDefense(model, masker, Quantize()), (x, y), src, out_dir=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    # the same masker and classifier with another preprocessing: the same gray-box target, reusable
    sfm = tmp_path / "sfm"
    rep = evaluate(SFMDefense(model, masker, Quantize()), (x, y), "fgsm-linf:eps=0.1", "gray-box", out_dir=sfm,
                   sanity=None, batch_size=16, progress=False, save_adversarial=True)
    assert rep.summary["targets"]["gray-box"]["target"] == "masker and base model (no preprocessing)"
    again = reevaluate(SFMDefense(model, masker, Quantize(8)), (x, y), sfm, out_dir=tmp_path / "b", progress=False)
    assert again.row("fgsm-linf:eps=0.1")["attack_acc"] == rep.row("fgsm-linf:eps=0.1")["attack_acc"]


# ---- training on digits, checkpoint, defense -------------------------------------------------------


def test_training_on_digits_writes_both_networks_and_loads_into_the_defense(tmp_path):
    torch.manual_seed(5)
    pretrained = create_model("digits_cnn", width=4)  # the target model's pre-training (Section 5.1)
    save_checkpoint(pretrained, tmp_path / "init.safetensors", {})
    nets, meta = train_sfm_on_dataset(
        "digits", "digits_cnn", TrainConfig(epochs=1, batch_size=64), out_dir=tmp_path / "sfm",
        weights=(2.5e-3, 1.0, 1.0), classifier_kwargs={"width": 4}, masker_kwargs={"width": 4, "depth": 2},
        preprocess=Quantize(), init_from=tmp_path / "init.safetensors", limit=256, progress=False, log=lambda s: None)
    assert meta["training_key"]["init"] == weights_sha256(pretrained.state_dict())
    assert sorted(meta["components"]) == ["classifier", "masker"]
    assert 0 <= meta["test_accuracy"] <= 1 and 0 < meta["test_mask_mean"] < 1 and meta["n_test"] > 0
    assert meta["training_key"]["transform"] == {"squeezer": "quantize", "levels": 4}
    assert meta["training_key"]["task"]["weights"] == [2.5e-3, 1.0, 1.0]
    path = tmp_path / "sfm" / "model.safetensors"
    classifier, _ = load_model(path, component="classifier")
    d = build_defense(f"sfm:masker={path}", classifier)
    assert isinstance(d, SFMDefense) and not d.masker.training
    assert weights_sha256(d.masker.state_dict()) == weights_sha256(nets["masker"].state_dict())
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(d.predict(x), classifier(x * nets["masker"](x)).argmax(1))
    with pytest.raises(SpecError, match="not the classifier the masker"):
        build_defense(f"sfm:masker={path}", create_model("digits_cnn", width=4))
    # with squeezers, as the squeeze: spec names them
    d = build_defense(f"sfm:masker={path},method=bits+median,bits=3,size=2", classifier)
    assert [s.config() for s in d.squeezers] == [{"squeezer": "bits", "bits": 3}, {"squeezer": "median", "size": 2}]
    assert torch.equal(d.predict(x), classifier(Median(2)(BitDepth(3)(x * nets["masker"](x)))).argmax(1))
    with pytest.raises(SpecError, match="without method"):
        build_defense(f"sfm:masker={path},bits=3", classifier)


def test_cli_trains_the_digits_preset_from_scratch(tmp_path, capsys):
    from maskdefense.cli import main

    out = tmp_path / "run"
    args = ["train", "--preset", "sfm-digits", "--out", str(out), "--epochs", "1", "--limit", "128", "--no-progress"]
    assert main([*args, "--model", "lenet5"]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert main(args) == 2 and "--init-from" in capsys.readouterr().err  # the preset fine-tunes plain-digits
    assert main([*args, "--from-scratch"]) == 0
    assert "test accuracy of the masked pipeline" in capsys.readouterr().out
    masker, _ = load_model(out / "model.safetensors", component="masker")
    assert masker.spec == {"name": "attention_unet",
                           "kwargs": {"in_channels": 1, "input_size": 8, "width": 8, "depth": 3}}


def test_ensure_sfm_reuses_exactly_the_same_training(tmp_path):
    from maskdefense.experiments.common import ensure_model, ensure_sfm

    small = {"init": None, "epochs": 1, "classifier_kwargs": {"width": 4}, "masker_kwargs": {"width": 4, "depth": 2},
             "log": lambda s: None, "progress": False}
    nets, meta = ensure_sfm("sfm-digits", tmp_path, **small)
    assert sorted(nets) == ["classifier", "masker"] and meta["preset"]["name"] == "sfm-digits"
    assert ensure_sfm("sfm-digits", tmp_path, **small)[1]["sha256"] == meta["sha256"]  # reused
    other = ensure_sfm("sfm-digits", tmp_path, **{**small, "weights": (0.1, 1.0, 1.0)})[1]
    assert other["sha256"] != meta["sha256"] and other["training_key"]["task"]["weights"] == [0.1, 1.0, 1.0]
    with pytest.raises(TypeError, match="ensure_sfm"):
        ensure_model("sfm-digits", tmp_path)
    with pytest.raises(TypeError, match="ensure_model"):
        ensure_sfm("plain-digits", tmp_path)
