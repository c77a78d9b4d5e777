"""UNMASK's library parts: the feature-denoising block and the ResNets that carry it, part sets and Jaccard
scores, the UNMASK defense (decisions, threshold convention, soft vs hard part sets), the generated part
dataset and the PASCAL-Part loader, and the thesis' numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from maskdefense.checkpoint import load_model, save_checkpoint
from maskdefense.data import (PASCAL_PART_PARTS, DataError, PartData, PartScenes, attribute_matrix, load_pascal_part,
                              merge_part_name, part_overlap, render_part_scenes, sample_part_scenes, synthetic_parts)
from maskdefense.defenses.base import ABSTAIN, REJECT, contract_of
from maskdefense.defenses.unmask import UNMASK, match_class
from maskdefense.eval.metrics.detection import roc
from maskdefense.models import DENOISE_MODES, NonLocalDenoise, create_model
from maskdefense.ops.parts import jaccard_distance, jaccard_similarity, part_areas, parts_present, soft_parts_present
from maskdefense.papers import unmask as paper
from maskdefense.seeding import seeded

# ---- feature-denoising block ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(DENOISE_MODES))
@pytest.mark.parametrize("train", [True, False])
def test_denoise_block_is_the_identity_at_init(mode, train):
    torch.manual_seed(0)
    block = NonLocalDenoise(6, mode).train(train)
    x = torch.randn(2, 6, 5, 4)
    out = block(x)
    assert out.shape == x.shape and torch.equal(out, x)


@pytest.mark.parametrize("mode", list(DENOISE_MODES))
def test_denoise_block_gradients_flow(mode):
    torch.manual_seed(0)
    block = NonLocalDenoise(6, mode)
    nn.init.ones_(block.bn.weight)  # a trained block: no longer the identity
    x = torch.randn(2, 6, 5, 4, requires_grad=True)
    out = block(x)
    assert not torch.equal(out, x)
    out.square().sum().backward()
    grads = [x.grad, block.conv.weight.grad] + ([block.theta.weight.grad, block.phi.weight.grad] if block.embed else [])
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_denoise_operations_match_the_formulas():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 2)
    v = x.flatten(2)[0]  # (C, N) positions as columns
    blk = NonLocalDenoise(4, "embedded_gaussian")
    th, ph = blk.theta.weight[:, :, 0, 0] @ v, blk.phi.weight[:, :, 0, 0] @ v  # (2, N)
    w = torch.softmax(th.T @ ph / math.sqrt(2), dim=1)  # w[i, j] = f(x_i, x_j) / C(x)
    assert torch.allclose(blk.denoise(x).flatten(2)[0], v @ w.T, atol=1e-6)
    gauss = torch.softmax(v.T @ v / math.sqrt(4), dim=1)
    assert torch.allclose(NonLocalDenoise(4, "gaussian").denoise(x).flatten(2)[0], v @ gauss.T, atol=1e-5)
    dot = (v.T @ v) / 6  # C(x) = N = H * W
    assert torch.allclose(NonLocalDenoise(4, "dot_product").denoise(x).flatten(2)[0], v @ dot.T, atol=1e-5)
    mean = NonLocalDenoise(4, "mean").denoise(x)
    assert torch.allclose(mean[0, :, 0, 0], x[0, :, :2, :2].mean((1, 2)))  # a corner averages its 2x2 neighbourhood
    assert torch.allclose(mean[0, :, 1, 0], x[0, :, :3, :2].mean((1, 2)))


# ---- ResNets -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kw, size, blocks", [
    ("resnet18", {}, 32, 0),
    ("resnet18", {"stem": "imagenet", "input_size": 64}, 64, 0),
    ("resnet50", {}, 32, 0),
    ("resnet18_denoise1", {}, 32, 1),
    ("resnet18_denoise4", {"denoise_mode": "mean"}, 32, 4),
    ("resnet101_denoise4", {"stem": "imagenet", "input_size": 64}, 64, 4),
])
def test_resnet_variants_build_and_forward(name, kw, size, blocks):
    torch.manual_seed(0)
    m = create_model(name, width=0.125, **kw).eval()
    assert m(torch.rand(2, 3, size, size)).shape == (2, 10)
    assert len(m.denoise) == blocks


def test_resnet50_has_bottlenecks_with_four_times_the_planes():
    m = create_model("resnet50", width=0.125)
    assert len(m.layers) == 16 and m.layers[0].conv3.out_channels == 32 and m.head[2].in_features == 256


def test_plain_resnet18_state_dict_keys_are_unchanged():
    """Checkpoints of resnet18 / resnet18_half written before the denoising blocks existed load strictly."""
    keys = {"normalize.mean", "normalize.std", "stem.0.weight", "head.2.weight", "head.2.bias"}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys |= {f"stem.1.{k}" for k in bn}
    for i in range(8):
        keys |= {f"layers.{i}.conv1.weight", f"layers.{i}.conv2.weight"}
        keys |= {f"layers.{i}.{b}.{k}" for b in ("bn1", "bn2") for k in bn}
        if i in (2, 4, 6):  # the first block of stages 2-4 downsamples
            keys |= {f"layers.{i}.shortcut.0.weight"} | {f"layers.{i}.shortcut.1.{k}" for k in bn}
    for name in ("resnet18", "resnet18_half"):
        assert set(create_model(name).state_dict()) == keys, name
    assert create_model("resnet18_half").layers[0].conv1.weight.shape == (32, 32, 3, 3)


def test_denoise_blocks_start_as_the_identity_inside_a_resnet(tmp_path):
    torch.manual_seed(0)
    plain = create_model("resnet18", width=0.125).eval()
    denoised = create_model("resnet18_denoise4", width=0.125).eval()
    missing, unexpected = denoised.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("denoise.") for k in missing)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(denoised(x), plain(x))
    path = save_checkpoint(denoised, tmp_path / "m.safetensors", {})
    again, _ = load_model(path)
    assert again.spec == denoised.spec and torch.equal(again(x), denoised(x))


def test_resnet_rejects_bad_options():
    for kw in ({"stem": "tiny"}, {"block": "wide"}, {"denoise_after": (5,)}, {"denoise_after": (1,), "denoise_mode": "x"}):
        with pytest.raises(ValueError):
            create_model("resnet18", width=0.125, **kw)


# ---- part sets and Jaccard -----------------------------------------------------------------------------------


def _logits(labels: torch.Tensor, parts: int, scale: float = 1.0) -> torch.Tensor:
    """Per-pixel logits whose arg-max is ``labels`` ``(N, H, W)`` (0 = background)."""
    return scale * nn.functional.one_hot(labels, parts + 1).permute(0, 3, 1, 2).float()


def test_parts_present_by_area_at_least_the_threshold():
    lab = torch.zeros(1, 4, 4, dtype=torch.long)
    lab[0, :2, :2] = 1  # part 0: 4 of 16 pixels
    lab[0, 3, 3] = 2  # part 1: 1 pixel
    z = _logits(lab, 3)
    assert torch.equal(part_areas(z), torch.tensor([[0.25, 0.0625, 0.0]]))
    assert parts_present(z, 0.1).tolist() == [[True, False, False]]
    assert parts_present(z, 0.0625).tolist() == [[True, True, False]]  # an area equal to the threshold counts
    with pytest.raises(ValueError):
        parts_present(z, 0.0)


def test_soft_part_sets_tend_to_the_hard_ones():
    torch.manual_seed(0)
    z = torch.randn(6, 5, 8, 8)
    thr = 10.5 / 64  # between two achievable areas
    hard = parts_present(z, thr).float()
    assert torch.allclose(soft_parts_present(1e4 * z, thr, 1e-4), hard, atol=1e-6)
    assert not torch.allclose(soft_parts_present(z, thr, 0.1), hard, atol=0.1)


def test_jaccard_on_hand_made_sets():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    sim = jaccard_similarity(a, b)
    assert sim.dtype == torch.float64
    assert torch.equal(sim, torch.tensor([[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(jaccard_distance(a, b), torch.tensor([[2 / 3, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64))
    empty = torch.zeros(1, 4)
    assert jaccard_similarity(empty, empty).item() == 0.0 and jaccard_distance(empty, empty).item() == 1.0


def test_attribute_matrix_and_overlap():
    v = attribute_matrix(("a", "b"), ("x", "y", "z"), {"a": ["x", "y"], "b": ["z"]})
    assert v.tolist() == [[1, 1, 0], [0, 0, 1]]
    for bad in ({"a": ["x"], "b": []}, {"a": ["x"], "b": ["w"]}, {"a": ["x"]}):
        with pytest.raises(ValueError):
            attribute_matrix(("a", "b"), ("x", "y", "z"), bad)
    assert part_overlap({"a": ["x", "y"], "b": ["y", "z"], "c": ["w"]}) == 0.25


# ---- the UNMASK defense --------------------------------------------------------------------------------------

# Three parts (red, green, blue regions of the image), three classes: 0 = {red, green}, 1 = {red, blue}, 2 = {blue}.
V = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=torch.float32)


class ColourParts(nn.Module):
    """Part ``c`` where channel ``c`` is the largest and above 0.5 (background logit 0.5), logits times ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * torch.cat([torch.full_like(x[:, :1], 0.5), x], 1)


class FixedLabels(nn.Module):
    """A classifier stub whose arg-max is ``self.y``."""

    def __init__(self, y):
        super().__init__()
        self.y = torch.as_tensor(y)

    def forward(self, x):
        return nn.functional.one_hot(self.y, 3).float() * 5 + 0 * x.sum((1, 2, 3))[:, None]


def _images(*part_sets):
    """8x8 images: the top-left quarter red if 0 in the set, top-right green if 1, bottom-left blue if 2."""
    x = torch.zeros(len(part_sets), 3, 8, 8)
    for i, s in enumerate(part_sets):
        for p, (r, c) in zip((0, 1, 2), ((0, 0), (0, 4), (4, 0))):
            if p in s:
                x[i, p, r : r + 4, c : c + 4] = 1.0
    return x


def _unmask(y, **kw):
    return UNMASK(FixedLabels(y), ColourParts(kw.pop("scale", 1.0)), V, area_threshold=0.1, **kw).eval()


def test_detection_decisions_and_the_threshold_convention():
    x = _images({0, 1}, {0, 1}, {0, 1})  # parts {red, green}: similarity 1, 1/3, 0 to classes 0, 1, 2
    d = _unmask([0, 1, 2]).distance(x)
    assert torch.equal(d, torch.tensor([0.0, 2 / 3, 1.0]))
    assert _unmask([0, 1, 2], threshold=0.5).predict(x).tolist() == [0, REJECT, REJECT]
    for t, rejected in ((2 / 3, True), (float(np.nextafter(np.float32(2 / 3), np.float32(1))), False)):
        u = _unmask([1, 1, 1], threshold=t)
        c = u.contract()
        assert c.rejects and c.reject_threshold < u.threshold
        assert (u.predict(x) == REJECT).all().item() is rejected  # d >= t
        assert bool((u.detect(x) > c.reject_threshold).all()) is rejected  # the contract's score > threshold, same set
        assert (u(x).argmax(1) == 1).all()  # detection mode: M's logits


def test_defense_decisions_max_similarity_and_the_printed_argmin():
    x = _images({0, 1}, {0}, set(), {2})
    u = _unmask([0, 0, 0, 0], mode="defend")
    sim = u.similarity(x)
    assert torch.allclose(sim, torch.tensor([[1, 1 / 3, 0], [0.5, 0.5, 0], [0, 0, 0], [0, 0.5, 1]]))
    assert u.predict(x).tolist() == [0, 0, ABSTAIN, 2]  # ties to the first class; no matching part: abstain
    assert match_class(sim, "min").tolist() == [2, 2, 0, 0]
    assert _unmask([0] * 4, mode="defend", rule="min").predict(x).tolist() == [2, 2, 0, 0]
    assert torch.equal(u(x), sim)  # forward: the hard similarities as logits
    assert not u.contract().rejects and u.contract().bpda_steps


def test_detect_returns_hard_values_with_soft_gradients():
    x = _images({0, 1}, {0}, {2}).requires_grad_(True)
    u = _unmask([1, 0, 2], temperature=0.05)
    det = u.detect(x)
    assert torch.equal(det, u.distance(x).detach())
    (g_det,) = torch.autograd.grad(det.sum(), x)
    (g_soft,) = torch.autograd.grad(u.distance(x, soft=True).sum(), x)
    assert torch.allclose(g_det, g_soft) and g_det.abs().sum() > 0
    sharp = _unmask([1, 0, 2], scale=1e3, temperature=1e-3)
    assert torch.allclose(sharp.distance(x, soft=True), sharp.distance(x), atol=1e-5)  # soft -> hard at the limit
    assert torch.allclose(sharp.similarity(x, soft=True), sharp.similarity(x), atol=1e-5)


def test_calibrate_rejects_at_most_the_false_positive_rate():
    x = _images(*([{0, 1}] * 5 + [{0}] * 3 + [set()] * 2))  # d = 0 (5), 1/2 (3), 1 (2) for class 0
    u = _unmask([0] * 10)
    t = u.calibrate(x, 0.2)
    assert t > 0.5 and (u.predict(x) == REJECT).sum() == 2
    u.calibrate(x, 0.1)  # the two images at d = 1 tie: rejecting one of them is impossible, so none is
    assert (u.predict(x) == REJECT).sum() == 0 and u.config()["fpr"] == 0.1
    clean, adv = _unmask([0] * 5).detect(x[:5]), _unmask([0] * 2).detect(x[8:])
    assert roc(clean.numpy(), adv.numpy())["auc"] == 1.0


def test_unmask_contract_config_and_errors():
    u = UNMASK(FixedLabels([0]), ColourParts(), V, classes=("a", "b", "c"), parts=("r", "g", "b"))
    c = contract_of(u)
    assert c.components == ("base", "extractor") and c.reject_threshold == pytest.approx(0.7)
    assert json.loads(json.dumps(u.config()))["parts"] == ["r", "g", "b"]
    for kw in ({"mode": "vote"}, {"rule": "mean"}, {"threshold": float("nan")}, {"classes": ("a",)}):
        with pytest.raises(ValueError):
            UNMASK(FixedLabels([0]), ColourParts(), V, **kw)
    with pytest.raises(ValueError):
        UNMASK(FixedLabels([0]), ColourParts(), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="1 \\+ P"):
        UNMASK(FixedLabels([0]), ColourParts(), torch.tensor([[1.0, 1], [1, 0], [0, 1]])).detect(_images({0}))


# ---- the generated part dataset ------------------------------------------------------------------------------


def _colour_table(scenes: PartScenes) -> torch.Tensor:
    """``(n, 1 + P, 3)``: each image's colour of every part it draws."""
    n, slots = scenes.parts.shape
    table = torch.full((n, scenes.num_parts + 1, 3), -1.0)
    for s in range(slots):
        rows = scenes.valid[:, s].nonzero().flatten()
        table[rows, scenes.parts[rows, s] + 1] = scenes.colours[rows, s]
    return table


def test_generated_images_show_each_part_exactly_where_its_mask_says():
    v = attribute_matrix(("a", "b"), tuple("pqrstuvwxy"), {"a": "pqrstu", "b": "stuvwxy"})
    scenes = sample_part_scenes(v, 40, size=32, generator=seeded(1))
    images, part_map = render_part_scenes(scenes)
    assert images.shape == (40, 3, 32, 32) and part_map.dtype == torch.uint8
    bg = (part_map == 0)[:, None].expand_as(images)
    assert torch.equal(images[bg], scenes.background[bg])  # the background outside the union of the masks
    expected = _colour_table(scenes).gather(1, part_map.flatten(1).long()[..., None].expand(-1, -1, 3))
    seen = part_map.flatten(1) > 0
    assert torch.equal(images.flatten(2).transpose(1, 2)[seen], expected[seen])  # each part's colour on its mask
    data = PartData(images, scenes.labels, part_map, tuple("pqrstuvwxy"), ("a", "b"), "t", "train")
    shown = data.part_areas() > 0
    assert not (shown & ~v.bool()[scenes.labels]).any() and shown.any(1).all()  # only the class's parts, >= 1


def test_hand_made_scene_masks_and_occlusion():
    one = torch.ones(1, 2, dtype=torch.bool)
    scenes = PartScenes(labels=torch.zeros(1, dtype=torch.long), parts=torch.tensor([[0, 1]]), valid=one,
                        centers=torch.tensor([[[16.0, 16.0], [24.0, 16.0]]]), radii=torch.tensor([[5.0, 3.0]]),
                        angles=torch.tensor([[0.3, 0.0]]), colours=torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]),
                        background=torch.zeros(1, 3, 32, 32), num_parts=2)
    images, part_map = render_part_scenes(scenes)
    c = torch.arange(32) + 0.5
    disk = (c[None, :] - 16) ** 2 + (c[:, None] - 16) ** 2 <= 25  # [row, col]: x = col, y = row
    square = torch.maximum((c[None, :] - 24).abs(), (c[:, None] - 16).abs()) <= 0.8 * 3  # drawn over the disk
    assert torch.equal(part_map[0] == 2, square)
    assert torch.equal(part_map[0] == 1, disk & ~square)
    assert torch.equal(images[0, 0] == 1, disk & ~square) and torch.equal(images[0, 1] == 1, square)


def test_synthetic_parts_are_seeded_split_and_balanced():
    sets = paper.class_set_parts("CS3a")
    a = synthetic_parts(sets, "val", n=60, seed=3)
    b = synthetic_parts(sets, "val", n=60, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.part_map, b.part_map) and torch.equal(a.labels, b.labels)
    assert not torch.equal(synthetic_parts(sets, "val", n=60, seed=4).images, a.images)
    assert not torch.equal(synthetic_parts(sets, "test", n=60, seed=3).images, a.images)
    assert torch.bincount(a.labels).tolist() == [20, 20, 20] and a.classes == ("car", "person", "train")
    assert a.images.min() >= 0 and a.images.max() <= 1
    masks = a.part_masks()
    assert masks.shape == (60, len(a.part_names), 32, 32) and torch.equal(masks.sum(1) == 0, a.part_map == 0)
    sub = a.subset([5, 1])
    assert torch.equal(sub.part_map, a.part_map[[5, 1]]) and sub.image_data().labels.tolist() == a.labels[[5, 1]].tolist()
    with pytest.raises(ValueError):
        synthetic_parts(sets, "holdout")


def test_class_set_data_uses_the_44_part_vocabulary():
    d = paper.class_set_data("CS5b", "test", n=20)
    assert d.part_names == PASCAL_PART_PARTS and len(d.classes) == 5
    shown = d.part_areas() > 0
    assert not (shown & ~paper.attributes("CS5b").bool()[d.labels]).any()


# ---- PASCAL-Part ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, merged", [
    ("lear", "ear"), ("reye", "eye"), ("lbleg", "leg"), ("lfpa", "paw"), ("lebrow", "eyebrow"), ("handlebar", "hand"),
    ("ruarm", "arm"), ("rhorn", "horn"), ("chainwheel", "wheel"), ("wheel_3", "wheel"), ("rfoot", "foot"),
    ("cleftside_2", "coach_left"), ("croofside_1", "coach_top"), ("hfrontside", None), ("coach_4", None),
    ("leftside", "vehicle_left"), ("roofside", "vehicle_top"), ("lwing", "wing"), ("engine_2", "engine"),
    ("window_12", "window"), ("headlight_1", "headlight"), ("door_1", "door"), ("fliplate", "licenseplate"),
    ("leftmirror", "mirror"), ("lfho", "hoof"), ("frontside", "frontside"), ("head", "head"), ("dog", None),
])
def test_part_names_merge_as_in_the_reference_code(name, merged):
    assert merge_part_name(name) == merged


def _write_pascal_part(root, n=10):
    """``n`` annotations (8x12 images): files 0-4 a dog (largest) and a person, 5-9 a big person and a chair."""
    import cv2
    from scipy.io import savemat

    base = root / "VOCdevkit" / "VOC2010"
    (base / "Annotations_Part").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    pfields, ofields = [("part_name", "O"), ("mask", "O")], [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]

    def mask(r0, r1, c0, c1):
        m = np.zeros((8, 12), np.uint8)
        m[r0:r1, c0:c1] = 1
        return m

    for i in range(n):
        objs = np.zeros((1, 2), dtype=ofields)
        if i < 5:
            parts = np.zeros((1, 3), dtype=pfields)
            parts[0, 0], parts[0, 1], parts[0, 2] = ("head", mask(0, 2, 0, 4)), ("lfleg", mask(4, 8, 0, 2)), ("lear", mask(0, 1, 0, 1))
            objs[0, 0] = ("dog", np.array([[12]]), mask(0, 8, 0, 6), parts)
            small = np.zeros((1, 1), dtype=pfields)
            small[0, 0] = ("hair", mask(0, 1, 10, 12))
            objs[0, 1] = ("person", np.array([[15]]), mask(0, 2, 8, 12), small)
        else:
            parts = np.zeros((1, 1), dtype=pfields)
            parts[0, 0] = ("llarm", mask(2, 4, 4, 8))
            objs[0, 0] = ("chair", np.array([[9]]), mask(0, 1, 0, 1), np.zeros((0, 0)))
            objs[0, 1] = ("person", np.array([[15]]), mask(0, 8, 2, 10), parts)
        name = f"2008_{i:06d}"
        savemat(base / "Annotations_Part" / f"{name}.mat", {"anno": {"imname": name, "objects": objs}})
        img = np.zeros((8, 12, 3), np.uint8)
        img[:] = (200, 100, 50)  # BGR
        assert cv2.imwrite(str(base / "JPEGImages" / f"{name}.jpg"), img)
    return base


def test_pascal_part_loader_reads_parts_labels_and_images(tmp_path):
    _write_pascal_part(tmp_path)
    splits = {s: load_pascal_part(s, root=tmp_path, size=8) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [8, 1, 1]
    full = {d: np.zeros((8, 12), np.uint8) for d in ("dog", "person")}
    pid = {p: PASCAL_PART_PARTS.index(p) + 1 for p in ("head", "leg", "ear", "hair", "arm")}
    full["dog"][0:2, 0:4], full["dog"][4:8, 0:2], full["dog"][0, 0], full["dog"][0, 10:12] = (
        pid["head"], pid["leg"], pid["ear"], pid["hair"])
    full["person"][2:4, 4:8] = pid["arm"]
    labels = torch.cat([d.labels for d in splits.values()])
    assert sorted(labels.tolist()) == sorted([11] * 5 + [14] * 5)  # the largest object's class: dog 11, person 14
    for d in splits.values():
        for lab, pm in zip(d.labels, d.part_map):
            assert np.array_equal(pm.numpy(), full["dog" if lab == 11 else "person"][:, 2:10])  # centre crop
        assert d.images.shape[1:] == (3, 8, 8)
        assert torch.allclose(d.images.mean((0, 2, 3)), torch.tensor([50, 100, 200]) / 255, atol=3 / 255)  # RGB
    persons = load_pascal_part("train", root=tmp_path, size=4, classes=("person",))
    assert persons.classes == ("person",) and (persons.labels == 0).all() and persons.images.shape[2:] == (4, 4)
    assert len(persons) == int((splits["train"].labels == 14).sum())


def test_pascal_part_loader_errors(tmp_path):
    with pytest.raises(DataError, match="Annotations_Part"):
        load_pascal_part(root=tmp_path)
    base = _write_pascal_part(tmp_path, n=3)
    for f in (base / "JPEGImages").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="missing"):
        load_pascal_part("test", root=tmp_path)
    with pytest.raises(ValueError):
        load_pascal_part(root=tmp_path, classes=("unicorn",))


# ---- the papers' data ----------------------------------------------------------------------------------------


def test_class_sets_order_by_overlap_and_match_the_code():
    assert paper.OVERLAP["CS3a"] < paper.OVERLAP["CS3b"] and paper.OVERLAP["CS5a"] < paper.OVERLAP["CS5b"]
    assert paper.OVERLAP["CS3a"] == pytest.approx(2 / 29)  # car/train share "headlight", person/train "head"
    for name, classes in paper.CLASS_SETS.items():
        assert paper.attributes(name).shape == (len(classes), 44)
    assert set().union(*map(set, paper.CLASS_PARTS.values())) <= set(PASCAL_PART_PARTS)


def test_table7_agrees_with_the_thesis_text():
    t7, claims = paper.TABLE7, paper.TABLE7_CLAIMS
    sets = list(paper.CLASS_SETS)

    def mean(model, key):
        return float(np.mean([t7[(model, s)][key] for s in sets]))

    for model, key, claim in (("ours", "no_defense", "ours_no_defense"), ("baseline", ("mia-linf", 16), "baseline_mia_linf16"),
                              ("ours", ("mia-linf", 16), "ours_mia_linf16")):
        assert mean(model, key) == pytest.approx(claims[claim], abs=0.0051)  # rounded to 2 decimals (61.875 -> 61.88)
    # the text's overall means (87.01, 80.48) are 0.006-0.008 above the table's: rounding of unrounded numbers
    for model in ("ours", "baseline"):
        overall = float(np.mean([mean(model, c) for c in paper.TABLE7_COLUMNS]))
        assert overall == pytest.approx(claims[f"{model}_defended"], abs=0.01)
    assert claims["ours_defended"] - claims["baseline_defended"] == pytest.approx(claims["gain"])
    assert all(len(r) == 9 for r in t7.values()) and paper.TABLE6["resnet101_denoise1"]["at_adv"] == 70.100


def test_part_unet_as_the_extractor_of_unmask():
    torch.manual_seed(0)
    seg = create_model("part_unet", num_parts=3, input_size=8, channels=(4, 8), strides=(2,))
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    assert seg(x).shape == (2, 4, 8, 8)
    u = UNMASK(FixedLabels([0, 1]), seg, V, area_threshold=0.05, temperature=0.1)
    (g,) = torch.autograd.grad(u.detect(x).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert u.predict(x.detach()).shape == (2,)
    with pytest.raises(ValueError, match="divisible"):
        create_model("part_unet", input_size=30)
