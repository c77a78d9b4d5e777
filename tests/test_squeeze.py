"""Image squeezers (ops.squeeze) against the libraries' own output and hand computations, their BPDA gradient,
and the Squeeze defense (feature squeezing, TVM): contract, EOT, registry specs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle
from torch import nn

from maskdefense.defenses.base import contract_of
from maskdefense.defenses.registry import build_defense, list_defenses
from maskdefense.defenses.squeeze import Squeeze
from maskdefense.ops.eot import log_mean_softmax
from maskdefense.ops.squeeze import (TVM, BitDepth, Median, NLMeans, Squeezer, create_squeezer, create_squeezers,
                                     list_squeezers, tv_objective, tv_reconstruct)
from maskdefense.seeding import seeded
from maskdefense.spec import SpecError
from maskdefense.validation import InputError

ALL = {"bits": {"bits": 3}, "median": {"size": 2}, "nlmeans": {}, "tvm": {"iters": 20}}


def _images(n: int = 2, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Random images on the 8-bit grid (exact in uint8 and float32)."""
    return torch.randint(0, 256, (n, c, size, size), generator=seeded(seed)).float() / 255


def _linear(c: int = 3, size: int = 8, k: int = 4) -> nn.Sequential:
    g = seeded(1)
    lin = nn.Linear(c * size * size, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(k, generator=g) * 0.1)
    return nn.Sequential(nn.Flatten(), lin).eval()


def _to_u8_hwc(img: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


# -- registry --------------------------------------------------------------------------------------------------
def test_registry_lists_and_creates_every_squeezer() -> None:
    assert list_squeezers() == ["bits", "median", "nlmeans", "tvm"]
    for name, kw in ALL.items():
        sq = create_squeezer(name, **kw)
        assert isinstance(sq, Squeezer) and sq.name == name and sq.config()["squeezer"] == name
        assert sq.randomized == (name == "tvm") and sq.non_differentiable
    with pytest.raises(ValueError, match="unknown squeezer 'blur'"):
        create_squeezer("blur")


def test_chain_routes_parameters_and_refuses_strays() -> None:
    chain = create_squeezers("bits+median", bits=4, size=3)
    assert [s.config() for s in chain] == [{"squeezer": "bits", "bits": 4}, {"squeezer": "median", "size": 3}]
    with pytest.raises(ValueError, match="no squeezer of bits\\+median takes weight"):
        create_squeezers("bits+median", weight=0.1)


# -- each squeezer against a hand computation or its library ---------------------------------------------------
def test_bits_by_hand() -> None:
    x = torch.tensor([0.0, 0.1, 0.5, 0.52, 1.0]).view(1, 1, 1, 5)
    assert BitDepth(1)(x).flatten().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # 0.5 rounds half to even, as np.rint
    assert torch.equal(BitDepth(5)(x), torch.tensor([0, 3, 16, 16, 31]).float().view(1, 1, 1, 5) / 31)
    y = _images()
    assert torch.equal(BitDepth(3)(y), torch.from_numpy(np.rint(y.numpy() * 7) / 7).float())


def test_median_2x2_convention_by_hand() -> None:
    a = torch.tensor([[1, 5, 2], [7, 3, 9], [4, 8, 6]]).float() / 10
    # window of (i, j): rows i-1..i, columns j-1..j, border reflected; the upper of the two middle values
    want = torch.tensor([[1, 5, 5], [7, 5, 5], [7, 7, 8]]).float() / 10
    x = torch.stack([a, a.T]).unsqueeze(0).repeat(2, 1, 1, 1)  # channels and images filtered independently
    out = Median(2)(x)
    assert torch.equal(out, torch.stack([want, want.T]).unsqueeze(0).repeat(2, 1, 1, 1))


def test_median_3x3_matches_opencv() -> None:
    x = _images(2, 3, 9)
    want = torch.stack([torch.from_numpy(cv2.medianBlur(_to_u8_hwc(im), 3)).permute(2, 0, 1) for im in x])
    assert torch.equal(Median(3)(x), want.float() / 255)  # 3x3: reflect and OpenCV's replicate border agree


@pytest.mark.parametrize("workers", [1, 2])
def test_nlmeans_matches_opencv(workers: int) -> None:
    x = _images(3, 3, 16)
    sq = NLMeans(h=10, search=7, patch=3, workers=workers)
    for i, im in enumerate(x):
        bgr = _to_u8_hwc(im)[:, :, ::-1].copy()
        want = cv2.fastNlMeansDenoisingColored(bgr, None, 10, 10, 3, 7)[:, :, ::-1].copy()
        assert torch.equal(sq(x)[i], torch.from_numpy(want).permute(2, 0, 1).float() / 255)
    gray = _images(2, 1, 16)
    want = cv2.fastNlMeansDenoising(_to_u8_hwc(gray[1])[:, :, 0], None, 10, 3, 7)
    assert torch.equal(sq(gray)[1, 0], torch.from_numpy(want).float() / 255)
    assert not torch.equal(sq(x), x)


def test_tv_reconstruct_keeping_every_pixel_is_skimage_rof() -> None:
    x = torch.nn.functional.avg_pool2d(_images(2, 3, 20), 3, 1)  # 18x18, some structure
    keep = torch.ones(2, 1, 18, 18)
    ours = tv_reconstruct(x, keep, 0.1, iters=500)
    ref = np.stack([denoise_tv_chambolle(im.permute(1, 2, 0).double().numpy(), weight=0.1, channel_axis=-1,
                                         eps=1e-9, max_num_iter=5000) for im in x])
    ref_t = torch.from_numpy(ref).permute(0, 3, 1, 2).float()
    assert (ours - ref_t).abs().max() < 2e-3
    assert torch.allclose(tv_objective(ours, x, keep, 0.1), tv_objective(ref_t, x, keep, 0.1), rtol=1e-4)


def test_tvm_keeping_everything_with_tiny_weight_is_the_identity() -> None:
    x = _images()
    assert (TVM(keep=1.0, weight=1e-6)(x, seeded(0)) - x).abs().max() < 1e-4


def test_tvm_fills_dropped_pixels_of_a_piecewise_constant_image() -> None:
    x = torch.empty(1, 3, 16, 16)
    x[:, :, :, :8], x[:, :, :, 8:] = 0.2, 0.8
    x[:, 1] = 1 - x[:, 1]
    keep = TVM(keep=0.5).draw(x, seeded(0))
    out = tv_reconstruct(x, keep, 0.03)
    dropped = (keep == 0).expand_as(x)
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.1)
    interior = dropped.clone()
    interior[..., 6:10] = False  # the columns next to the edge (the edge may move into a gap of kept pixels)
    assert (out - x)[interior].abs().max() < 0.02
    assert (out - x)[dropped].abs().mean() < 0.03


def test_tvm_lowers_the_objective_below_the_input() -> None:
    x = _images(4, 3, 12)
    keep = TVM().draw(x, seeded(3))
    out = tv_reconstruct(x, keep, 0.03)
    assert (tv_objective(out, x, keep, 0.03) < 0.8 * tv_objective(x, x, keep, 0.03)).all()
    assert tv_reconstruct(x[:0], keep[:0], 0.03).shape == (0, 3, 12, 12)


def test_tvm_draws_from_its_generator() -> None:
    x = _images()
    sq = TVM(iters=20)
    assert torch.equal(sq(x, seeded(5)), sq(x, seeded(5)))
    assert not torch.equal(sq(x, seeded(5)), sq(x, seeded(6)))
    assert sq.draw(x, seeded(0)).shape == (2, 1, 8, 8)
    assert TVM(per_channel=True).draw(x, seeded(0)).shape == (2, 3, 8, 8)
    assert TVM(keep=0.25).draw(_images(4, 3, 32), seeded(0)).mean().item() == pytest.approx(0.25, abs=0.03)


# -- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad, match", [
    (torch.rand(3, 8, 8), "shape"), ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), "float32"),
    (torch.rand(1, 3, 8, 8).double(), "float32"), (torch.rand(1, 3, 8, 8) + 1, r"\[0, 1\]"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"), (np.zeros((1, 3, 8, 8), np.float32), "torch.Tensor"),
])
def test_squeezers_refuse_bad_images(name: str, bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        create_squeezer(name, **ALL[name])(bad)


@pytest.mark.parametrize("name, kw", [
    ("bits", {"bits": 0}), ("bits", {"bits": 9}), ("bits", {"bits": 2.0}), ("median", {"size": 0}),
    ("nlmeans", {"patch": 2}), ("nlmeans", {"h": 0}), ("nlmeans", {"workers": 0}), ("tvm", {"keep": 0}),
    ("tvm", {"keep": 1.5}), ("tvm", {"weight": -1}), ("tvm", {"iters": 0}), ("tvm", {"per_channel": "yes"}),
])
def test_squeezers_refuse_bad_parameters(name: str, kw: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        create_squeezer(name, **kw)


def test_refusals_specific_to_a_squeezer() -> None:
    with pytest.raises(InputError, match="1 or 3 channels"):
        NLMeans()(_images(1, 2))
    x = _images()
    with pytest.raises(InputError, match="keep mask must have shape"):
        tv_reconstruct(x, torch.ones(2, 2, 8, 8), 0.1)
    with pytest.raises(InputError, match="only 0"):
        tv_reconstruct(x, torch.full((2, 1, 8, 8), 0.5), 0.1)


# -- BPDA --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL))
def test_bpda_gradient_is_the_classifier_gradient_at_the_squeezed_point(name: str) -> None:
    x, y = _images(), torch.tensor([0, 3])
    model, sq = _linear(), create_squeezer(name, **ALL[name])
    xg = x.clone().requires_grad_(True)
    z = sq.bpda(xg, seeded(2))
    assert torch.equal(z.detach(), sq(x, seeded(2)))
    nn.functional.cross_entropy(model(z), y).backward()
    w, b = model[1].weight.detach(), model[1].bias.detach()
    p = torch.softmax(z.detach().flatten(1) @ w.T + b, 1)  # d CE / d z = (softmax - onehot) W / N, by hand
    want = ((p - nn.functional.one_hot(y, 4).float()) @ w / 2).view_as(x)
    assert torch.allclose(xg.grad, want, atol=1e-6)
    assert sq(xg).grad_fn is None  # forward itself: the actual transform, no gradient


# -- the defense -------------------------------------------------------------------------------------------------
def test_squeeze_defense_contract_and_config() -> None:
    base = _linear()
    fs = Squeeze(base, BitDepth(5), n_grad=8)
    c = contract_of(fs)
    assert (c.randomized, c.samples_per_forward, c.bpda_steps, c.non_differentiable, c.missing_bpda) == \
        (False, 1, ("bits",), ("bits",), ())
    assert fs.config() == {"defense": "squeeze", "squeezers": [{"squeezer": "bits", "bits": 5}]}
    chain = Squeeze(base, create_squeezers("bits+median+bits"))
    assert contract_of(chain).bpda_steps == ("bits#1", "median", "bits#2")
    tvm = Squeeze(base, [Median(2), TVM(iters=10)], n_grad=3)
    c = contract_of(tvm)
    assert (c.randomized, c.samples_per_forward, c.bpda_steps) == (True, 3, ("median", "tvm"))
    assert tvm.config()["n_grad"] == 3
    with pytest.raises(ValueError, match="Squeezer instances"):
        Squeeze(base, [Median(2), nn.Identity()])
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(Squeeze(base, [])(x), base(x))  # no squeezer: the base alone


def test_deterministic_squeeze_forward_is_base_on_squeezed_input() -> None:
    x, base = _images(5), _linear()
    d = Squeeze(base, create_squeezers("bits+median", bits=4), chunk_size=2)
    want = base(Median(2)(BitDepth(4)(x)))
    assert torch.allclose(d(x), want, atol=1e-6)
    assert torch.equal(d.predict(x), want.argmax(1))


def test_tvm_defense_averages_draws_and_its_gradient_sums_over_them() -> None:
    x, base = _images(3), _linear()
    d = Squeeze(base, TVM(iters=20), n_grad=4, chunk_size=5)
    xg = x.clone().requires_grad_(True)
    out = d(xg, seeded(7))
    out[:, 1].sum().backward()
    z = TVM(iters=20)(x.repeat_interleave(4, 0), seeded(7)).requires_grad_(True)  # the same draws, by hand
    want = log_mean_softmax(base(z).view(3, 4, -1), dim=1)
    want[:, 1].sum().backward()
    assert torch.allclose(out, want, atol=1e-6)
    assert torch.allclose(xg.grad, z.grad.view(3, 4, *x.shape[1:]).sum(1), atol=1e-6)  # identity BPDA per copy
    assert torch.allclose(Squeeze(base, TVM(iters=20), n_grad=4)(x, seeded(7)), out, atol=1e-6)  # any chunk_size
    assert torch.equal(d.predict(x, generator=seeded(1)), d.predict(x, generator=seeded(1)))


# -- specs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, squeezers", [
    ("squeeze:method=bits,bits=5", [{"squeezer": "bits", "bits": 5}]),
    ("squeeze:method=median,size=2", [{"squeezer": "median", "size": 2}]),
    ("squeeze:method=nlmeans", [{"squeezer": "nlmeans", "h": 4.0, "search": 11, "patch": 3}]),
    ("squeeze:method=bits+median,bits=4", [{"squeezer": "bits", "bits": 4}, {"squeezer": "median", "size": 2}]),
    ("tvm:keep=0.5,weight=0.03,n_grad=2", [{"squeezer": "tvm", "keep": 0.5, "weight": 0.03, "iters": 100,
                                            "per_channel": False}]),
])
def test_specs_build_the_defense(spec: str, squeezers: list) -> None:
    d = build_defense(spec, _linear())
    assert isinstance(d, Squeeze) and d.config()["squeezers"] == squeezers
    assert {"squeeze", "tvm"} <= set(list_defenses())


@pytest.mark.parametrize("spec, match", [
    ("squeeze:bits=5", "squeeze needs method"), ("squeeze:method=blur", "unknown squeezer 'blur'"),
    ("squeeze:method=bits,size=2", "no squeezer of bits takes size"), ("squeeze:method=bits,bits=9", "bits must be"),
    ("tvm:keep=2", "keep must be"), ("tvm:n_grad=0", "n_grad must be"), ("tvm:method=median", "tvm takes no method"),
])
def test_bad_specs_give_one_clear_error(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match) as e:
        build_defense(spec, _linear())
    assert "\n" not in str(e.value)
