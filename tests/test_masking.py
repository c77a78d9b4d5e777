"""Semantics of the grid masking operator (maskdefense.ops.masking)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from maskdefense.ops.masking import (
    KEEP, REMOVED, GridMask, apply_mask, cells_removed, enumerate_masks, grid_mask,
    grid_shape, upsample_mask,
)
from maskdefense.validation import InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_keep_and_removed_are_the_values_the_operators_use() -> None:
    """KEEP / REMOVED are what the mask operators produce and how apply_mask reads them."""
    assert grid_mask(3, 8, 2, 0.0, generator=gen()).to(torch.int64).eq(KEEP).all()  # rate 0: nothing removed
    assert grid_mask(3, 8, 2, 1.0, generator=gen()).to(torch.int64).eq(REMOVED).all()  # rate 1: all removed
    pm = upsample_mask(grid_mask(3, 8, 2, 0.5, generator=gen(1)), 2)
    assert set(pm.unique().tolist()) == {float(KEEP), float(REMOVED)}
    x = _positive_images(3)
    assert torch.equal(apply_mask(x, torch.full((3, 1, 8, 8), float(KEEP)), 0.5), x)  # kept pixels untouched
    assert (apply_mask(x, torch.full((3, 1, 8, 8), float(REMOVED)), 0.5) == 0.5).all()  # removed ones filled
    # the convention's formula (MASK_CONVENTION): masked = x * m + fill * (1 - m)
    fill = torch.rand(1, 3, 1, 1, generator=gen(2))
    assert torch.allclose(apply_mask(x, pm, fill), x * pm + fill * (1 - pm))


@pytest.mark.parametrize("size,cell", [(32, 8), (28, 7), (32, 4), ((16, 8), 4), (8, 1)])
def test_masks_are_cell_aligned(size, cell) -> None:
    h, w = (size, size) if isinstance(size, int) else size
    cm = grid_mask(20, size, cell, 0.5, generator=gen())
    assert cm.dtype == torch.bool and cm.shape == (20, h // cell, w // cell)
    pm = upsample_mask(cm, cell)
    assert pm.shape == (20, 1, h, w) and pm.dtype == torch.float32
    blocks = pm.view(20, h // cell, cell, w // cell, cell)
    # every cell is all-kept or all-removed, and equals its cell-mask entry
    assert torch.equal(blocks.amax(dim=(2, 4)), blocks.amin(dim=(2, 4)))
    assert torch.equal(blocks.amax(dim=(2, 4)), cm.float())
    # boundaries only at multiples of cell: within a cell no row/column changes
    row_change = (pm[..., 1:, :] != pm[..., :-1, :]).any(dim=3).any(dim=0).view(-1)  # between rows i-1, i
    col_change = (pm[..., :, 1:] != pm[..., :, :-1]).any(dim=2).any(dim=0).view(-1)
    assert not row_change[torch.arange(1, h) % cell != 0].any()
    assert not col_change[torch.arange(1, w) % cell != 0].any()


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75, 0.9])
def test_bernoulli_rate_within_4_sigma(rate) -> None:
    cm = grid_mask(2000, 32, 8, rate, generator=gen(1))  # 32,000 cells
    n = cm.numel()
    removed = (~cm).float().mean().item()
    assert abs(removed - rate) <= 4 * math.sqrt(rate * (1 - rate) / n)


def test_rate_extremes() -> None:
    assert grid_mask(5, 8, 2, 0.0, generator=gen()).all()
    assert not grid_mask(5, 8, 2, 1.0, generator=gen()).any()
    assert grid_mask(5, 8, 2, 0.0, generator=gen(), exact=True).all()
    assert not grid_mask(5, 8, 2, 1.0, generator=gen(), exact=True).any()


@pytest.mark.parametrize("size,cell,rate", [(32, 8, 0.75), (28, 7, 0.75), (32, 4, 1 / 3), (8, 2, 0.5), (8, 2, 0.1)])
def test_exact_mode_removes_exactly_round_rate_cells(size, cell, rate) -> None:
    cm = grid_mask(300, size, cell, rate, generator=gen(2), exact=True)
    cells = (size // cell) ** 2
    k = cells_removed(rate, cells)
    assert k == math.floor(rate * cells + 0.5)
    assert ((~cm).flatten(1).sum(1) == k).all()
    if 0 < k < cells:  # every cell position gets removed at some point (uniform choice)
        assert (~cm).any(0).all()


def test_cells_removed_rounds_half_up() -> None:
    assert cells_removed(0.75, 16) == 12
    assert cells_removed(0.5, 5) == 3  # 2.5 -> 3
    assert cells_removed(1 / 3, 16) == 5  # 5.33 -> 5


@pytest.mark.parametrize("exact", [False, True])
def test_reproducible_under_seed_and_differs_under_another(exact) -> None:
    a = grid_mask(50, 32, 8, 0.75, generator=gen(7), exact=exact)
    b = grid_mask(50, 32, 8, 0.75, generator=gen(7), exact=exact)
    c = grid_mask(50, 32, 8, 0.75, generator=gen(8), exact=exact)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    t = GridMask(8, 0.75, fill="noise", exact=exact)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(t(x, gen(3)), t(x, gen(3)))
    assert not torch.equal(t(x, gen(3)), t(x, gen(4)))


def test_per_sample_independence() -> None:
    rate = 0.5
    cm = grid_mask(4000, 16, 4, rate, generator=gen(5))  # 16 cells each
    a, b = (~cm[0::2]).float(), (~cm[1::2]).float()
    both = (a * b).mean().item()  # P(cell removed in two different samples) = rate^2 if independent
    n = a.numel()
    p = rate * rate
    assert abs(both - p) <= 4 * math.sqrt(p * (1 - p) / n)
    assert len({tuple(r.tolist()) for r in cm[:64].flatten(1)}) > 50  # samples do not share a mask


@pytest.mark.parametrize("bad", [(28, 5), (32, 3), ((32, 30), 4)])
def test_cell_not_dividing_side_raises(bad) -> None:
    size, cell = bad
    with pytest.raises(ValueError, match=rf"cell {cell} does not divide image side"):
        grid_mask(1, size, cell, 0.5)
    with pytest.raises(ValueError, match="does not divide"):
        grid_shape(size, cell)


def test_cell_error_message_is_exact() -> None:
    with pytest.raises(ValueError, match="cell 5 does not divide image side 28"):
        grid_mask(1, 28, 5, 0.75)


@pytest.mark.parametrize("kw", [dict(rate=-0.1), dict(rate=1.5), dict(cell=0), dict(cell=2.0)])
def test_bad_parameters_raise(kw) -> None:
    args = dict(n=2, size=8, cell=2, rate=0.5) | kw
    with pytest.raises(ValueError):
        grid_mask(args["n"], args["size"], args["cell"], args["rate"])


def _positive_images(n: int = 4, c: int = 3, s: int = 8) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=gen(11)) * 0.5 + 0.25  # never 0: fills are detectable


def test_channels_share_masks() -> None:
    x = _positive_images()
    y = GridMask(2, 0.5)(x, gen(1))
    kept = y == x
    assert torch.equal(kept, kept[:, :1].expand_as(kept))
    assert (~kept).any() and kept.any()


def test_fill_black_is_zero_and_keeps_the_rest() -> None:
    x = _positive_images()
    cm = grid_mask(4, 8, 2, 0.5, generator=gen(2))
    m = upsample_mask(cm, 2)
    y = apply_mask(x, m, "black")
    assert torch.equal(y, x * m)
    assert (y[(m == 0).expand_as(x)] == 0).all()
    assert torch.equal(y[(m == 1).expand_as(x)], x[(m == 1).expand_as(x)])
    assert torch.equal(apply_mask(x, cm, "black"), y)  # a cell mask is accepted directly


def test_fill_mean_is_per_image_per_channel_mean() -> None:
    x = _positive_images()
    m = upsample_mask(grid_mask(4, 8, 2, 0.5, generator=gen(3)), 2)
    y = apply_mask(x, m, "mean")
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    removed = (m == 0).expand_as(x)
    assert torch.allclose(y[removed], mean[removed])
    assert torch.equal(y[~removed], x[~removed])


def test_fill_noise_in_unit_interval_and_from_generator() -> None:
    x = _positive_images()
    m = upsample_mask(grid_mask(4, 8, 2, 0.75, generator=gen(4)), 2)
    removed = (m == 0).expand_as(x)
    y1 = apply_mask(x, m, "noise", generator=gen(9))
    y2 = apply_mask(x, m, "noise", generator=gen(9))
    y3 = apply_mask(x, m, "noise", generator=gen(10))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert ((y1 >= 0) & (y1 <= 1)).all()
    expected = torch.rand(x.shape, generator=gen(9))
    assert torch.equal(y1[removed], expected[removed])


def test_fill_constant_and_tensor() -> None:
    x = _positive_images()
    m = upsample_mask(grid_mask(4, 8, 2, 0.5, generator=gen(5)), 2)
    removed = (m == 0).expand_as(x)
    assert (apply_mask(x, m, 0.5)[removed] == 0.5).all()
    per_channel = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    y = apply_mask(x, m, per_channel)
    assert torch.allclose(y[removed], per_channel.expand_as(x)[removed])
    with pytest.raises(ValueError, match="unknown fill"):
        apply_mask(x, m, "gray")


def test_apply_mask_is_differentiable() -> None:
    x = _positive_images().requires_grad_(True)
    m = upsample_mask(grid_mask(4, 8, 2, 0.5, generator=gen(6)), 2)
    apply_mask(x, m, "black").sum().backward()
    assert torch.equal(x.grad, m.expand_as(x))


def test_apply_mask_shape_errors() -> None:
    x = _positive_images()
    with pytest.raises(InputError):
        apply_mask(x, torch.ones(4, 1, 4, 4))
    with pytest.raises(InputError):
        apply_mask(x[0], torch.ones(1, 1, 8, 8))
    with pytest.raises(InputError):
        apply_mask(x, torch.ones(4, 3, 3, dtype=torch.bool))  # 3 cells do not tile 8 pixels


@pytest.mark.parametrize("size,cell,k", [(8, 2, 0), (8, 2, 1), (8, 2, 3), (8, 4, 2), (28, 7, 12), ((8, 4), 2, 4)])
def test_enumerate_masks_counts_and_content(size, cell, k) -> None:
    gh, gw = grid_shape(size, cell)
    ms = enumerate_masks(size, cell, k)
    assert ms.shape == (math.comb(gh * gw, k), gh, gw) and ms.dtype == torch.bool
    assert ((~ms).flatten(1).sum(1) == k).all()
    assert len({tuple(r.tolist()) for r in ms.flatten(1)}) == ms.shape[0]  # all distinct


def test_enumerate_masks_limits() -> None:
    with pytest.raises(ValueError, match="max_masks"):
        enumerate_masks(32, 2, 128, max_masks=1000)
    with pytest.raises(ValueError):
        enumerate_masks(8, 2, 17)


def test_grid_mask_transform_contract() -> None:
    t = GridMask(cell=8, rate=0.75)
    x = torch.rand(6, 3, 32, 32)
    y = t(x, gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert ((y == x) | (y == 0)).all()
    cfg = t.config()
    assert json.loads(json.dumps(cfg)) == {"transform": "grid_mask", "cell": 8, "rate": 0.75, "fill": "black",
                                           "exact": False}
    # the config rebuilds the same transform: same masks from the same generator state
    rebuilt = GridMask(**{k: v for k, v in cfg.items() if k != "transform"})
    assert torch.equal(rebuilt(x, gen(0)), y)
    noisy = GridMask(cell=8, rate=0.5, fill="noise", exact=True)
    assert torch.equal(GridMask(**{k: v for k, v in noisy.config().items() if k != "transform"})(x, gen(1)),
                       noisy(x, gen(1)))
    with pytest.raises(ValueError, match="does not divide"):
        t(torch.rand(2, 1, 28, 28), gen(0))
    with pytest.raises(ValueError):
        GridMask(8, 2.0)
