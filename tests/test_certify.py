"""Certified patch robustness: each certificate against brute force on tiny images, the double-masking
rules on hand-made cases, the empirical patch attack against certified images, the command (resumable)."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import pytest
import torch
from torch import nn

from maskdefense.certify import (DerandomizedSmoothing, GridCertifier, PatchCleanser, affected_copies,
                                 build_certifier, double_masking, feasibility, largest_certifiable,
                                 location_margins, unaffected_fraction)
from maskdefense.ops.ablation import (BandAblation, BlockAblation, Cutout, band_masks, block_masks, covering_masks,
                                      make_transform, patch_locations, patch_mask)
from maskdefense.ops.vote import top_class
from maskdefense.spec import SpecError


class Marker(nn.Module):
    """Class 1 iff a visible pixel is brighter than 0.95 (a patch of ones is the worst case for every copy
    it touches), else class 0; nearly one-hot softmax. A removed (black) pixel is never bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.flatten(1).max(dim=1).values
        return torch.stack([torch.zeros_like(bright), 100.0 * (bright - 0.95)], dim=1)


def _marker_images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Dark images (pixels <= 0.5) with 0 to 3 bright pixels at random places: some copies see one."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.rand(n, 1, side, side, generator=g)
    for i in range(n):
        for _ in range(i % 4):
            r, c = torch.randint(0, side, (2,), generator=g).tolist()
            x[i, 0, r, c] = 1.0
    return x


def _bright_images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Dark images with ``side + i`` bright pixels at random places: most copies see one, the decision is
    mostly 1, and a patch of zeros over some of them is the attack."""
    g = torch.Generator().manual_seed(seed + 100)
    x = 0.5 * torch.rand(n, 1, side, side, generator=g)
    for i in range(n):
        x[i, 0].view(-1)[torch.randperm(side * side, generator=g)[: side + i]] = 1.0
    return x


def _worst_patch_everywhere(cert, x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N,)`` bool: a patch at some location changes the decision (brute force, every location). For
    :class:`Marker` two contents are the worst cases: ones (every copy that sees the patch votes 1) against
    decision 0, zeros (the bright pixels under the patch hidden) against decision 1."""
    locs = patch_locations(x.shape[2:], patch)
    pm = patch_mask(x.shape[2:], patch, locs)  # (L, 1, H, W)
    clean = cert.predict(x)
    changed = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(x.shape[0]):
        for content in (1.0, 0.0):
            patched = x[i:i + 1] * (1 - pm) + content * pm
            changed[i] |= bool((cert.predict(patched) != clean[i]).any())
    return changed


# ---- geometry


def test_band_and_block_ablations_wrap_like_the_reference():
    m = band_masks(6, 2)
    assert m.shape == (6, 1, 6, 6)
    assert m[5, 0, 0].tolist() == [1, 0, 0, 0, 0, 1]  # columns 5 and 0
    assert torch.equal(band_masks(6, 2, "row")[1, 0, :, 0], torch.tensor([0.0, 1, 1, 0, 0, 0]))
    b = block_masks(4, 2)
    assert b.shape == (16, 1, 4, 4) and bool((b.sum(dim=(1, 2, 3)) == 4).all())
    assert b[15, 0].nonzero().tolist() == [[0, 0], [0, 3], [3, 0], [3, 3]]  # wraps both ways


@pytest.mark.parametrize("n, p, k", [(32, 5, 6), (32, 2, 6), (28, 5, 6), (8, 2, 3), (10, 3, 2), (9, 9, 3)])
def test_covering_masks_follow_the_reference_and_cover_every_patch(n, p, k):
    cs = covering_masks(n, p, k=k)
    s = math.ceil((n - p + 1) / k)
    m = min(p + s - 1, n)
    assert cs.stride == (s, s) and cs.size == (m, m)
    axis = list(range(0, n - m + 1, s)) + ([n - m] if (n - m) % s else [])
    assert cs.origins == [(r, c) for r in axis for c in axis]
    assert bool(cs.covers(p, (n, n)).any(dim=1).all())  # R-covering: every patch inside some mask
    assert covering_masks(32, 5, k=6).origins[:6] == [(0, 0), (0, 5), (0, 10), (0, 15), (0, 20), (0, 23)]


def test_affected_copies_by_hand():
    keep = band_masks(6, 2)  # column bands
    aff = affected_copies(keep, 2)
    loc = patch_locations(6, 2).tolist().index([0, 3])  # patch on columns 3, 4
    assert torch.nonzero(aff[loc]).flatten().tolist() == [2, 3, 4]  # bands starting at 2, 3, 4
    assert bool((aff.sum(dim=1) == 3).all())  # Delta = p + band - 1 everywhere (wrapping)


# ---- the counting, against enumeration of every vote the affected copies can cast


def test_location_margins_are_exact_against_enumeration():
    """4x4 image, 2x2 cells, every mask removing 3 of the 4 cells, 3 classes, random one-hot votes: the
    margin is >= 0 at a location iff no assignment of the affected copies' votes changes the decision."""
    g = torch.Generator().manual_seed(0)
    keep = GridCertifier(nn.Identity(), cell=2, rate=0.75).copy_masks(4, 4)
    checked = 0
    for trial in range(60):
        votes = torch.nn.functional.one_hot(torch.randint(0, 3, (1, keep.shape[0]), generator=g), 3)
        decision = top_class(votes.sum(dim=1))
        for p in (1, 2, 3):
            aff = affected_copies(keep, p)
            margin = location_margins(votes, aff, decision)[0]
            for l in range(aff.shape[0]):
                idx = torch.nonzero(aff[l]).flatten().tolist()
                fixed = votes[0, ~aff[l]].sum(dim=0)
                survives = all(
                    int(top_class((fixed + torch.bincount(torch.tensor(a, dtype=torch.long), minlength=3))[None])[0])
                    == int(decision[0]) for a in itertools.product(range(3), repeat=len(idx))) if idx else True
                assert (int(margin[l]) >= 0) == survives
                checked += 1
    assert checked > 500


def test_location_margins_are_exact_for_multi_class_votes():
    """Derandomized smoothing's threshold votes (a copy may vote for several classes, or none): the margin is
    >= 0 iff no choice of the affected copies' vote sets (any subset of the classes each) changes the decision."""
    g = torch.Generator().manual_seed(1)
    keep = band_masks(5, 2)
    subsets = list(itertools.product((0, 1), repeat=3))
    outcomes = set()
    for _ in range(6):
        votes = (torch.rand(1, keep.shape[0], 3, generator=g) < 0.45).long()
        decision = top_class(votes.sum(dim=1))
        for p in (1, 2):
            aff = affected_copies(keep, p)
            margin = location_margins(votes, aff, decision)[0]
            for l in range(aff.shape[0]):
                idx = torch.nonzero(aff[l]).flatten().tolist()
                fixed = votes[0, ~aff[l]].sum(dim=0)
                survives = all(int(top_class((fixed + torch.tensor(c).sum(dim=0))[None])[0]) == int(decision[0])
                               for c in itertools.product(subsets, repeat=len(idx)))
                assert (int(margin[l]) >= 0) == survives
                outcomes.add(survives)
    assert outcomes == {True, False}


# ---- each certificate against brute force over every patch location (pixel level)


@pytest.mark.parametrize("mode, band", [("column", 2), ("row", 3), ("block", 3)])
def test_derandomized_certificate_against_every_location(mode, band):
    x = torch.cat([_marker_images(16, 6), _bright_images(6, 6)])
    ds = DerandomizedSmoothing(Marker(), mode=mode, band=band, threshold=0.2).eval()
    certified_ones = 0
    for p in (1, 2, 3):
        cert = ds.certify(x, (p,))
        certified_ones += int((cert.at(p) & (cert.decision == 1)).sum())
        assert torch.equal(cert.decision, ds.predict(x))
        changed = _worst_patch_everywhere(ds, x, p)
        assert not bool((cert.at(p) & changed).any()), "a certified decision was changed"
        # the exact per-location margin is tight where the decision is 0 (a patch of ones is then the worst case)
        votes = ds.copy_votes(x)
        exact = location_margins(votes, affected_copies(ds.copy_masks(6, 6), p), cert.decision).min(1).values >= 0
        zero = cert.decision == 0
        assert torch.equal(exact[zero], ~changed[zero]) and not bool((exact & changed).any())
        assert bool((~cert.at(p) | exact).all())  # the closed form implies the exact condition
    assert bool(ds.certify(x, (1,)).at(1).any()) and not bool(ds.certify(x, (3,)).at(3).all())
    # the zeros patch was tried against certified decisions 1 too (rows: 6 bands of 3 rows, 2 Delta = 6 =
    # every vote, so only decision 0 can be certified, by the tie rule)
    assert certified_ones > 0 or mode == "row"


def test_derandomized_closed_form_by_hand():
    """Counts (n_c, n_c') and Delta: certified iff n_c - n_c' > 2 Delta, or == 2 Delta with c < c'."""
    ds = DerandomizedSmoothing(Marker(), mode="column", band=2)
    assert ds.delta(1, 6, 6) == 2 and ds.delta(3, 6, 6) == 4 and ds.delta(6, 6, 6) == 6  # capped at W
    assert DerandomizedSmoothing(Marker(), mode="block", band=2).delta(2, 8, 8) == 9
    x = torch.zeros(1, 1, 6, 6)  # every copy votes 0: n_0 = 6, n_1 = 0
    assert ds.certify(x, (1, 2, 3)).certified.tolist() == [[True, True, False]]  # 6 > 4; 6 == 2 * 3, 0 < 1; 6 < 8
    x[0, 0, 0, 0] = 1.0  # two bands see the bright pixel: n_0 = 4, n_1 = 2
    assert ds.certify(x, (1,)).certified.tolist() == [[False]]


@pytest.mark.parametrize("cell, rate", [(2, 0.875), (2, 0.75), (4, 0.5)])
def test_grid_certificate_against_every_location(cell, rate):
    x = torch.cat([_marker_images(12, 8, seed=1), _bright_images(6, 8, seed=1)])
    grid = GridCertifier(Marker(), cell=cell, rate=rate).eval()
    certified_ones = 0
    for p in (1, 2, 3):
        cert = grid.certify(x, (p,))
        certified_ones += int((cert.at(p) & (cert.decision == 1)).sum())
        changed = _worst_patch_everywhere(grid, x, p)
        assert not bool((cert.at(p) & changed).any())
        zero = cert.decision == 0  # a patch of ones is the worst case against 0: exact there
        assert torch.equal(cert.at(p)[zero], ~changed[zero]) and bool(zero.sum() > 4)
    if rate == 0.875:
        assert bool(grid.certify(x, (2,)).at(2).any())
    assert certified_ones > 0 or cell == 4  # the zeros patch was tried against certified decisions 1 too


def test_grid_feasibility_counts():
    assert unaffected_fraction(16, 12, 4) == pytest.approx(495 / 1820)
    f = feasibility(32, 8, 0.75, 2)
    assert (f["masks"], f["t_max"], f["possible"]) == (1820, 4, False)  # MAD's rate certifies no 2x2 patch
    assert feasibility(32, 8, 0.875, 8)["possible"] and not feasibility(32, 8, 0.875, 10)["possible"]
    assert feasibility(32, 4, 0.75, 1)["possible"]  # a single pixel: t = 1, fraction 3/4
    # the largest side: 8x8 cells at 7/8 allow 4 touched cells (66/120 = 0.55) up to 9 pixels, 3x3 cells from 10;
    # 4x4 cells at 15/16: 9 cells C(55, 4) / C(64, 4) = 0.54 up to 9 pixels, 16 cells (0.31) from 10
    assert [largest_certifiable(32, 8, r) for r in (0.5, 0.75, 0.875)] == [1, 1, 9]
    assert largest_certifiable(32, 4, 0.9375) == 9 and largest_certifiable(28, 7, 0.875) == 8
    assert largest_certifiable(32, 16, 0.875) == 32  # every cell removed: a constant vote
    # where impossible, nothing certifies
    x = torch.zeros(4, 1, 8, 8)
    assert not bool(GridCertifier(Marker(), cell=2, rate=0.75).certify(x, (2,)).certified.any())


def test_patchcleanser_certificate_against_every_location():
    x = _marker_images(16, 8, seed=2)
    for p, k in ((2, 3), (3, 2)):
        pc = PatchCleanser(Marker(), patch=p, k=k).eval()
        cert = pc.certify(x, (1, p, p + 1))
        assert torch.equal(cert.decision, pc.predict(x))
        assert not bool(cert.certified[:, 2].any())  # beyond the mask set's patch size: never
        for j, q in enumerate((1, p)):
            changed = _worst_patch_everywhere(pc, x, q)
            assert not bool((cert.certified[:, j] & changed).any())
        assert bool(cert.certified[:, 1].any())
        assert cert.passes[0] == pc.passes(8, 8) == len(pc.mask_set(8, 8).origins) * (len(pc.mask_set(8, 8).origins) + 1) // 2


@pytest.mark.parametrize("n, p, k", [(7, 3, 2), (8, 2, 2), (9, 2, 3)])
def test_patchcleanser_certificate_against_every_two_mask_map(n, p, k):
    """The certificate (every two-mask prediction equals the decision) against brute force over every patch
    location and every prediction the patch can cause: on the patched image the copy (i, j) is the clean one
    when masks i and j together hide the patch, any other copy may predict any of 3 classes. Every such map
    must double-mask to the decision. And one wrong two-mask prediction is enough for a patch to change it."""
    cs = covering_masks(n, p, k=k)
    m = cs.masks.shape[0]
    removed = (cs.masks.flatten(1) == 0)  # (M, HW)
    patches = patch_mask(n, p, patch_locations(n, p)).flatten(1) > 0  # (L, HW)
    hidden = (patches[:, None, None, :] <= (removed[None, :, None, :] | removed[None, None, :, :])).all(dim=3)
    assert bool(hidden.diagonal(dim1=1, dim2=2).any(dim=1).all())  # R-covering: some one-mask copy hides it
    free_sets = {tuple((i, j) for i in range(m) for j in range(i, m) if not hidden[l, i, j])
                 for l in range(hidden.shape[0])}
    g = torch.Generator().manual_seed(0)
    for y in range(3):
        clean = torch.full((m, m), y, dtype=torch.long)
        assert double_masking(clean) == y
        for free in free_sets:
            maps = (itertools.product(range(3), repeat=len(free)) if len(free) <= 6 else
                    (torch.randint(0, 3, (len(free),), generator=g).tolist() for _ in range(300)))
            for values in maps:
                patched = clean.clone()
                for (i, j), v in zip(free, values):
                    patched[i, j] = patched[j, i] = v
                assert double_masking(patched) == y
    # tightness: one wrong two-mask prediction (c, j) in the row of the only mask c hiding some location l, and a
    # patch at l (it controls every other one-mask copy) changes the decision: majority 1, the disagreer c fails
    one_mask = hidden.diagonal(dim1=1, dim2=2)  # (L, M)
    l = int(torch.nonzero(one_mask.sum(dim=1) == 1).flatten()[0])
    c = int(torch.nonzero(one_mask[l]).flatten()[0])
    clean = torch.zeros(m, m, dtype=torch.long)
    clean[c, (c + 1) % m] = clean[(c + 1) % m, c] = 1
    patched = torch.where(hidden[l], clean, torch.ones_like(clean))
    assert double_masking(clean) == 0 and double_masking(patched) == 1


def test_patchcleanser_random_patches_never_break_a_certificate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 8, 8, generator=g)
    pc = PatchCleanser(model, patch=2, k=3).eval()
    cert = pc.certify(x, (2,))
    locs = patch_locations(8, 2)
    pm = patch_mask(8, 2, locs)
    for i in torch.nonzero(cert.at(2)).flatten().tolist():
        for _ in range(3):
            content = torch.rand(locs.shape[0], 1, 8, 8, generator=g)
            assert bool((pc.predict(x[i:i + 1] * (1 - pm) + content * pm) == cert.decision[i]).all())


class Constant(nn.Module):
    """Class 0 whatever the input: every copy agrees, every decision is certified, every location ties."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([5.0, 0.0]).expand(x.shape[0], 2)


@pytest.mark.parametrize("cert", [PatchCleanser(Constant(), patch=3, k=3), DerandomizedSmoothing(Constant(), band=2),
                                  DerandomizedSmoothing(Constant(), mode="block", band=3),
                                  GridCertifier(Constant(), cell=4, rate=0.875)])
def test_weak_locations_spread_over_the_image_where_they_tie(cert):
    """Where the certificate ranks locations equal (a certified image), the attacked ones must not all sit
    in the image's first rows: the soundness check would try one corner only."""
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    locs = cert.weak_locations(x, 3, 8)
    assert locs.shape == (2, 8, 2) and torch.equal(locs[0], locs[1])
    rows, cols = locs[0, :, 0], locs[0, :, 1]
    assert int(rows.max() - rows.min()) >= 7 and int(cols.max() - cols.min()) >= 7  # of 0..13
    assert len({tuple(v) for v in locs[0].tolist()}) == 8


# ---- double masking on hand-made cases


def _pairs(one: list[int], rows: dict[int, list[int]] | None = None, default: int | None = None) -> torch.Tensor:
    m = len(one)
    p = torch.full((m, m), -1 if default is None else default, dtype=torch.long)
    p[range(m), range(m)] = torch.tensor(one)
    for i, r in (rows or {}).items():
        p[i] = torch.tensor(r)
    return p


def test_double_masking_cases():
    assert double_masking(_pairs([2, 2, 2, 2])) == 2  # Case I: agreement
    # Case II: mask 3 disagrees and every two-mask prediction in its row agrees with it
    assert double_masking(_pairs([1, 1, 1, 4], {3: [4, 4, 4, 4]})) == 4
    # Case III: the disagreer's row has one dissent -> majority
    assert double_masking(_pairs([1, 1, 1, 4], {3: [4, 1, 4, 4]})) == 1
    # the first passing disagreer in index order wins
    assert double_masking(_pairs([0, 0, 0, 5, 7], {3: [5] * 5, 4: [7] * 5})) == 5
    assert double_masking(_pairs([0, 0, 0, 5, 7], {3: [5, 5, 0, 5, 5], 4: [7] * 5})) == 7
    # a tied majority goes to the smaller class; the disagreers are the other label's masks
    assert double_masking(_pairs([3, 3, 1, 1], {0: [3, 0, 3, 3], 1: [3, 3, 0, 3]})) == 1
    assert double_masking(_pairs([3, 3, 1, 1], {0: [3, 3, 3, 3], 1: [3, 0, 0, 0]})) == 3


def test_patchcleanser_lazy_predict_equals_the_full_map():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    pc = PatchCleanser(model, patch=2, k=3)
    full = torch.tensor([double_masking(p) for p in pc.pair_predictions(x)])
    assert torch.equal(pc.predict(x), full)
    assert len(set(full.tolist())) > 1


# ---- specs, transforms


def test_specs_and_bad_input():
    m = Marker()
    assert isinstance(build_certifier("ds:mode=block,band=3", m), DerandomizedSmoothing)
    assert build_certifier("pc:patch=3,stride=2", m).config()["stride"] == 2
    for bad in ("pc:k=6", "grid:cell=2", "ds:band=0", "ds:mode=diagonal", "grid:cell=2,rate=0.5,fill=mean", "ds:bnd=2"):
        with pytest.raises(SpecError):
            build_certifier(bad, m)
    with pytest.raises(ValueError, match="exceed max_masks"):
        GridCertifier(m, cell=4, rate=0.75).certify(torch.zeros(1, 1, 32, 32), (2,))
    with pytest.raises(ValueError, match="patch size"):
        DerandomizedSmoothing(m).certify(torch.zeros(1, 1, 6, 6), (7,))


@pytest.mark.parametrize("transform, kept", [(BandAblation(2), 2 * 8), (BandAblation(3, "row"), 3 * 8),
                                             (BlockAblation(3), 9)])
def test_ablation_transforms_keep_one_band_or_block(transform, kept):
    x = torch.ones(6, 1, 8, 8)
    out = transform(x, torch.Generator().manual_seed(0))
    assert bool((out.sum(dim=(1, 2, 3)) == kept).all())
    assert make_transform(transform.config()).config() == transform.config()


def test_cutout_removes_two_clipped_squares():
    out = Cutout(4, holes=2)(torch.ones(50, 1, 8, 8), torch.Generator().manual_seed(0))
    removed = 64 - out.sum(dim=(1, 2, 3))
    assert bool((removed <= 32).all()) and bool((removed >= 4).all()) and int(removed.max()) > 16


# ---- the empirical attack on tiny trained digits models, and the command


def _digits_model(transform, seed: int = 0) -> nn.Module:
    """A linear digits classifier trained for ~1 s on inputs under ``transform`` (the certifier's ablation)."""
    from maskdefense.data import load_dataset

    train = load_dataset("digits", "train")
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(transform(train.images, g)), train.labels).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("spec, transform, p", [
    ("ds:mode=column,band=2,threshold=0.3", BandAblation(2), 1),  # 8 columns: a 2x2 patch leaves no margin
    ("pc:patch=2,k=3", Cutout(4, holes=2), 2),
    ("grid:cell=2,rate=0.875,n_grad=32", make_transform({"transform": "grid_mask", "cell": 2, "rate": 0.875,
                                                         "exact": True}), 1),  # 2x2: 4 cells, fraction 0.55
])
def test_patch_attack_never_breaks_a_certified_image(spec, transform, p):
    from maskdefense.attacks.patch import patch_attack
    from maskdefense.data import load_dataset

    test = load_dataset("digits", "test", limit=40)
    cert = build_certifier(spec, _digits_model(transform)).eval()
    c = cert.certify(test.images, (p,))
    res = patch_attack(cert, test.images, p, locations=4, steps=8, step_size=0.2,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.decision, c.decision)
    assert not bool((c.at(p) & res.broken).any()), "the attack changed a certified decision"
    assert bool(c.at(p).any()), "nothing certified: the check would be empty"
    assert bool(res.broken.any()), "the attack broke nothing: it does not work"
    broken = torch.nonzero(res.broken).flatten()
    assert torch.equal(cert.predict(res.x_adv[broken]), res.decision_adv[broken])  # the stored example does it
    changed = (res.x_adv != test.images).flatten(1).any(dim=1)
    outside = (res.x_adv - test.images) * (1 - patch_mask(8, p, res.location))
    assert bool((outside.abs().flatten(1).max(dim=1).values == 0).all()) and bool(changed[broken].all())


def test_certify_command_runs_and_resumes(tmp_path, capsys):
    from maskdefense.checkpoint import save_checkpoint
    from maskdefense.cli import main
    from maskdefense.models import create_model

    torch.manual_seed(0)
    model = create_model("digits_cnn", in_channels=1, input_size=8, num_classes=10)
    ck = tmp_path / "ck" / "model.safetensors"
    ck.parent.mkdir()
    save_checkpoint(model, ck, {"dataset": "digits"})
    out = tmp_path / "out"
    argv = ["certify", "--checkpoint", str(ck), "--certifier", "ds:mode=column,band=2", "--patch", "1", "2",
            "--n", "12", "--batch-size", "5", "--attack-patch", "2", "--attack-n", "6", "--attack-steps", "2",
            "--attack-locations", "2", "--out", str(out)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "cert" for r in records) == 12 and sum(r["kind"] == "attack" for r in records) == 6
    assert set(records[0]["certified"]) == {"1", "2"} and records[0]["passes"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert [r["patch"] for r in summary["rows"]] == [1, 2] and summary["attack"][0]["n"] == 6
    assert summary["attack"][0]["certified_broken"] == 0 and not summary["flags"]
    # kill-and-resume: drop the last group and a half-written line; the rerun recomputes exactly that
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:-1]) + lines[-1][:10])
    assert main(argv) == 0
    again = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    strip = lambda rs: sorted((r["key"], r.get("decision"), r.get("broken")) for r in rs)  # noqa: E731
    assert strip(again) == strip(records)
    # another configuration into the same folder is refused with one line
    capsys.readouterr()
    assert main([*argv[:-2], "--patch", "3", "--out", str(out)]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main(["certify", "--list"]) == 0 and "grid" in capsys.readouterr().out


@pytest.mark.parametrize("dataset", ["cifar10", "mnist"])
def test_plan_certifies_every_patch_side_from_2_to_8(dataset):
    """The issue's sweep: 2x2 to 8x8 patches (5x5, derandomized smoothing's setting, among them) for every
    certifier; PatchCleanser one mask set per side."""
    from maskdefense.experiments.certify import plan

    runs = plan(dataset)
    for r in runs:
        if not r.name.startswith("pc-"):
            assert set(r.patches) == set(range(2, 9)), r.name
    assert sorted(p for r in runs if r.name.startswith("pc-") for p in r.patches) == list(range(2, 9))
    assert {r.attack_patch for r in runs if r.attack_n} == {5}
    # the soundness attack: every image of every run on MNIST (so every certified image); on CIFAR-10 the first
    # certified images of each run
    attacked = [r for r in runs if r.attack_n]
    assert all(r.attack_n == r.n for r in attacked) == (dataset == "mnist")
    assert all(r.attack_certified for r in attacked) == (dataset == "cifar10")


def test_reproduce_certify_quick(tmp_path, capsys):
    """The study on the digits: every certifier's row, the soundness check at zero broken certificates, the
    overview beside it; a rerun reuses the models and the records."""
    from maskdefense.cli import main

    importlib.import_module("maskdefense.papers.certify")  # its presets, when the package is not reinstalled
    out, runs = tmp_path / "results" / "certify-quick", tmp_path / "runs"
    argv = ["reproduce", "certify", "--quick", "--runs-dir", str(runs), "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    rows = {r["run"]: r for r in data["rows"]}
    assert set(rows) == {"ds-column", "ds-block", "pc-p1", "pc-p2", "grid-mad", "grid-cert"}
    assert rows["ds-column"]["passes"] == 8 and rows["grid-mad"]["passes"] == 1820 and rows["pc-p2"]["passes"] == 45
    assert rows["grid-mad"]["certified_2"] == 0.0  # MAD's rate 3/4 cannot certify a 2x2 patch
    assert "certified_2" not in rows["pc-p1"]  # a mask set certifies its own size and smaller ones
    assert all(r["certified_broken"] == 0 for r in rows.values() if r["certified_attacked"] is not None)
    assert any(r["uncertified_broken"] for r in rows.values() if r["uncertified_broken"] is not None)
    readme = (out / "README.md").read_text()
    assert "certified broken" in readme and "can certify?" in readme and "largest patch side" in readme
    assert (out / "certified_vs_patch.png").is_file()
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.json"))  # the training records of every base model
    assert kept == sorted(data["meta"]["training_records"])
    assert len(kept) == len({r["model_preset"] for r in rows.values()})
    assert all("history" in json.loads((out / "checkpoints" / k).read_text()) for k in kept)
    overview = (tmp_path / "results" / "certify" / "overview.md").read_text()
    assert "(../certify-quick/README.md)" in overview  # the link resolves from results/certify/
    assert not (tmp_path / "results" / "certify" / "README.md").exists()  # the hand-written verdict's place
    stamp = (out / "ds-column" / "records.jsonl").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "ds-column" / "records.jsonl").stat().st_mtime_ns == stamp  # nothing recomputed
    assert json.loads((out / "results.json").read_text())["rows"] == data["rows"]


def test_certify_study_fails_loudly_on_an_unsound_certificate(tmp_path, monkeypatch):
    """A deliberately unsound certificate (derandomized smoothing with Delta = 0: any lead "certifies") must be
    caught: the patch attack breaks certified decisions, the study writes its tables, then raises."""
    import maskdefense.experiments.certify as study
    from maskdefense.eval.certify import SoundnessError

    importlib.import_module("maskdefense.papers.certify")
    only = [r for r in study.plan("digits") if r.name == "ds-column"]
    monkeypatch.setattr(study, "plan", lambda ds: [study.replace(r, attack_n=r.n) for r in only])
    monkeypatch.setattr(DerandomizedSmoothing, "delta", lambda self, patch, h, w: 0)
    out = tmp_path / "results" / "certify-quick"
    logs: list[str] = []
    with pytest.raises(SoundnessError, match="ds-column"):
        study.certify_study(out, quick=True, runs_dir=tmp_path / "runs", log=logs.append)
    assert "SOUNDNESS VIOLATION" in (out / "README.md").read_text()
    assert any("SOUNDNESS VIOLATION" in line for line in logs)


def test_overview_lists_the_published_certifiers(tmp_path):
    """The overview's published rows (CIFAR-10 has some; the quick run's digits none): sizes as the papers give
    them (11.2 M, not 11.2000), a number not read from its source shown as '-'."""
    from maskdefense.experiments.certify import write_overview
    from maskdefense.papers.certify import published

    pub = [p.__dict__ for p in published("cifar10")]
    assert pub and any(p["clean"] is None for p in pub)
    folder = tmp_path / "certify-cifar10"
    folder.mkdir()
    rows = [{"run": "ds-column", "certifier": "DS column, band 4", "model": "vgg16_half", "n": 2, "clean": 0.5,
             "certified_2": 0.5}]
    (folder / "results.json").write_text(json.dumps({"meta": {"dataset": "cifar10", "patches": [2],
                                                              "published": pub}, "rows": rows}))
    text = write_overview(tmp_path).read_text()
    line = next(x for x in text.splitlines() if x.startswith("| PatchCleanser | ViT-B16-224"))
    assert line.split(" | ")[2:5] == ["86", "35 px of 224 (2.4%)", "-"]
    assert "| Derandomized smoothing (column) | ResNet-18 | 11.2 | 5x5 (2.4%) | 83.80% | 57.60% |" in text


def test_certified_only_attack_spends_itself_on_certified_images(tmp_path):
    """``attack_certified_only``: the patch attack runs on the first ``attack_n`` images certified at its size
    (read from the run's own certification records), and a rerun resumes without attacking again."""
    from maskdefense.data import load_dataset
    from maskdefense.eval.certify import certify_dataset

    test = load_dataset("digits", "test", limit=30)
    cert = build_certifier("ds:mode=column,band=2,threshold=0.3", _digits_model(BandAblation(2))).eval()
    certified = cert.certify(test.images, (1,)).at(1)
    want = torch.nonzero(certified).flatten()[:7].tolist()
    assert 7 == len(want) < 30 and want != list(range(7))  # the selection differs from the first images
    kw = dict(out_dir=tmp_path / "run", batch_size=4, attack_patches=(1,), attack_n=7, attack_steps=2,
              attack_locations=2, attack_certified_only=True)
    summary = certify_dataset(cert, test, (1,), **kw)
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    attacks = [r for r in map(json.loads, lines) if r["kind"] == "attack"]
    assert sorted(r["idx"] for r in attacks) == want and all(r["certified"] for r in attacks)
    assert all(r["label"] == int(test.labels[r["idx"]]) for r in attacks)  # each record describes its image
    assert summary["attack"][0]["certified_attacked"] == 7 and summary["attack"][0]["uncertified_attacked"] == 0
    assert "first images certified" in (tmp_path / "run" / "summary.md").read_text()
    certify_dataset(cert, test, (1,), **kw)  # resumes: nothing appended
    assert (tmp_path / "run" / "records.jsonl").read_text().splitlines() == lines
