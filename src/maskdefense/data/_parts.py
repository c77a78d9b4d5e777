"""Classes described by their parts, and a procedurally generated part dataset.

``synthetic_parts`` is a *stand-in* for a part-annotated dataset such as PASCAL-Part, for machines without
one: every class is a set of part names, every image shows a random subset of its class's parts (each kept
with probability ``keep``, at least one), each part a flat-coloured primitive shape (disk, square, triangle,
ring, bar, cross, diamond, half disk) with a random position on a jittered grid, rotation, scale and colour
over a textured background (a random low-saturation sinusoidal grating plus noise), and the exact per-pixel
part labels. How it differs from PASCAL-Part: no objects, no articulation and no realistic appearance; a part
is recognisable by its shape and hue alone (both fixed per part name: shape = index mod 8, hue = index div 8,
jittered), so parts shared by classes look the same in all of them (what makes class sets overlap); an
image shows only parts of its class, but a few shared parts may fit several classes (like an occluded
object); every part is visible unless a later one covers it; images are 32x32 by default (the CIFAR-sized pipeline and classifiers apply
unchanged, and 10k images take a few seconds on one CPU thread; ``size=64`` gives each part four times the
pixels).

Randomness: one ``torch.Generator`` per split, seeded from ``(seed, split)``, so the train, val and test
splits are fixed and independent. Split sizes default to :data:`SYNTHETIC_SPLIT_SIZES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..seeding import derive_seed, seeded
from ._types import PartData

__all__ = ["SHAPES", "SYNTHETIC_SPLIT_SIZES", "PART_SOURCES", "PartScenes", "attribute_matrix", "part_overlap",
           "sample_part_scenes", "render_part_scenes", "synthetic_parts", "part_dataset"]

#: The primitive shapes, in the order of their index (a part's shape is its vocabulary index mod 8).
SHAPES = ("disk", "square", "triangle", "ring", "bar", "cross", "diamond", "half_disk")
SYNTHETIC_SPLIT_SIZES = {"train": 8000, "val": 1000, "test": 1000}


def attribute_matrix(classes: Sequence[str], parts: Sequence[str],
                     class_parts: Mapping[str, Iterable[str]]) -> Tensor:
    """The class-attribute matrix ``V`` ``(K, P)`` float: ``V[k, p] = 1`` when class ``classes[k]`` has part
    ``parts[p]`` in ``class_parts``. Every class needs at least one part of the vocabulary."""
    index = {p: i for i, p in enumerate(parts)}
    if len(index) != len(parts):
        raise ValueError("part names must be distinct")
    v = torch.zeros(len(classes), len(parts))
    for k, c in enumerate(classes):
        if c not in class_parts:
            raise ValueError(f"class {c!r} has no part set; known: {sorted(class_parts)}")
        names = set(class_parts[c])
        if not names or names - set(index):
            raise ValueError(f"class {c!r} needs a non-empty part set within the vocabulary, "
                             f"got {sorted(names)} (unknown: {sorted(names - set(index))})")
        v[k, [index[p] for p in names]] = 1.0
    return v


def part_overlap(class_parts: Mapping[str, Iterable[str]]) -> float:
    """The feature overlap of a set of classes: the fraction of the parts of their union that belong to more
    than one class."""
    sets = [set(p) for p in class_parts.values()]
    union = set().union(*sets)
    if not union:
        raise ValueError("the classes have no parts")
    return sum(1 for p in union if sum(p in s for s in sets) > 1) / len(union)


@dataclass(frozen=True)
class PartScenes:
    """The random draws of ``n`` images with up to ``S`` parts each (slot ``s`` is drawn over slot ``s - 1``).

    labels ``(n,)``; parts ``(n, S)`` part indices; valid ``(n, S)`` the slot shows its part; centers
    ``(n, S, 2)`` (x, y) in pixels; radii ``(n, S)`` in pixels; angles ``(n, S)``; colours ``(n, S, 3)``
    in [0, 1]; background ``(n, 3, H, W)``; num_parts the vocabulary size ``P``.
    """

    labels: Tensor
    parts: Tensor
    valid: Tensor
    centers: Tensor
    radii: Tensor
    angles: Tensor
    colours: Tensor
    background: Tensor
    num_parts: int


def _hsv(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] -> RGB ``(..., 3)``."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[..., None] * 6) % 6
    return v[..., None] - (v * s)[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


#: Membership of local coordinates (u, v) (unit = the part's radius) in each shape of :data:`SHAPES`.
_SHAPE_TESTS = (
    lambda u, v: u * u + v * v <= 1,
    lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.8,
    lambda u, v: (v >= -0.5) & (v <= 1 - math.sqrt(3) * u.abs()),
    lambda u, v: ((u * u + v * v) <= 1) & ((u * u + v * v) >= 0.45),
    lambda u, v: (u.abs() <= 1) & (v.abs() <= 0.35),
    lambda u, v: ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1)),
    lambda u, v: u.abs() + v.abs() <= 1,
    lambda u, v: (u * u + v * v <= 1) & (v >= 0),
)


def sample_part_scenes(attributes: Tensor, n: int, *, size: int = 32, keep: float = 0.8,
                       generator: torch.Generator) -> PartScenes:
    """Draw ``n`` scenes for the classes of ``attributes`` (``V``, ``(K, P)``): balanced labels, each class's
    parts kept with probability ``keep`` (at least one), one part per cell of a jittered ``g x g`` grid
    (``g = ceil(sqrt(largest part set))``), radius 0.4-0.65 of a cell."""
    v = attributes.bool()
    k, p = v.shape
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    slots = int(v.sum(1).max())
    g = math.ceil(math.sqrt(slots))
    cell = size / g

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator)

    labels = (torch.arange(n) % k)[torch.randperm(n, generator=generator)]
    own = v[labels]
    shown = own & (rand(n, p) < keep)
    shown.scatter_(1, torch.multinomial(own.float(), 1, generator=generator), True)
    parts = (rand(n, p) + 2.0 * ~shown).argsort(1)[:, :slots]  # shown parts first, in random order
    valid = torch.arange(slots)[None] < shown.sum(1, keepdim=True)
    cells = rand(n, g * g).argsort(1)[:, :slots]
    centers = (torch.stack([cells % g, cells // g], -1) + 0.5 + 0.4 * rand(n, slots, 2) - 0.2) * cell
    radii = cell * (0.4 + 0.25 * rand(n, slots))
    angles = 2 * math.pi * rand(n, slots)
    hue = (parts // len(SHAPES)).float() / math.ceil(p / len(SHAPES)) + 0.06 * rand(n, slots) - 0.03
    colours = _hsv(hue % 1.0, 0.6 + 0.4 * rand(n, slots), 0.6 + 0.4 * rand(n, slots))
    duo = _hsv(rand(n, 2), 0.2 * rand(n, 2), 0.2 + 0.7 * rand(n, 2))  # (n, 2, 3) low-saturation pair
    freq, phi, psi = 1 + 3 * rand(n), math.pi * rand(n), 2 * math.pi * rand(n)
    xy = torch.arange(size) + 0.5
    proj = xy[None, None, :] * phi.cos()[:, None, None] + xy[None, :, None] * phi.sin()[:, None, None]
    t = 0.5 + 0.5 * torch.sin(2 * math.pi * freq[:, None, None] * proj / size + psi[:, None, None])
    background = duo[:, 0, :, None, None] * (1 - t[:, None]) + duo[:, 1, :, None, None] * t[:, None]
    background = (background + 0.02 * torch.randn(background.shape, generator=generator)).clamp(0, 1)
    return PartScenes(labels, parts, valid, centers, radii, angles, colours, background, p)


def render_part_scenes(scenes: PartScenes) -> tuple[Tensor, Tensor]:
    """``(images (n, 3, H, W), part_map (n, H, W) uint8)``: the background, then every valid slot's shape
    in its flat colour, later slots over earlier ones; ``part_map`` is ``1 + part`` where a part is seen."""
    n, slots = scenes.parts.shape
    size = scenes.background.shape[-1]
    xy = torch.arange(size) + 0.5
    top = torch.full((n, size, size), -1, dtype=torch.long)  # the slot seen at each pixel, -1 = background
    for s in range(slots):
        for k, test in enumerate(_SHAPE_TESTS):  # each image's own shape only
            idx = (scenes.valid[:, s] & (scenes.parts[:, s] % len(SHAPES) == k)).nonzero().flatten()
            c, r, a = scenes.centers[idx, s], scenes.radii[idx, s, None, None], scenes.angles[idx, s, None, None]
            dx = (xy[None, None, :] - c[:, 0, None, None]) / r
            dy = (xy[None, :, None] - c[:, 1, None, None]) / r
            top[idx] = torch.where(test(a.cos() * dx + a.sin() * dy, a.cos() * dy - a.sin() * dx), s, top[idx])
    seen = top >= 0
    slot = top.clamp_min(0).flatten(1)
    part_map = torch.where(seen, scenes.parts.gather(1, slot).view_as(top) + 1, 0).to(torch.uint8)
    colour = scenes.colours.gather(1, slot[..., None].expand(-1, -1, 3)).view(n, size, size, 3).permute(0, 3, 1, 2)
    return torch.where(seen[:, None], colour, scenes.background).contiguous(), part_map


def synthetic_parts(class_parts: Mapping[str, Iterable[str]], split: str = "train", *,
                    part_names: Sequence[str] | None = None, size: int = 32, n: int | None = None, seed: int = 0,
                    keep: float = 0.8) -> PartData:
    """A split of the generated part dataset (see the module docstring).

    class_parts : class name -> its part names, in label order.
    part_names : the part vocabulary (default: the sorted union of the classes' parts); a shared vocabulary
        gives a part the same appearance in every class set.
    n : images (default :data:`SYNTHETIC_SPLIT_SIZES` of the split).
    """
    if split not in SYNTHETIC_SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SYNTHETIC_SPLIT_SIZES)}")
    classes = tuple(class_parts)
    names = tuple(part_names) if part_names is not None else tuple(sorted(set().union(*map(set, class_parts.values()))))
    if len(names) > 254:
        raise ValueError(f"at most 254 parts fit a uint8 part map, got {len(names)}")
    count = SYNTHETIC_SPLIT_SIZES[split] if n is None else int(n)
    scenes = sample_part_scenes(attribute_matrix(classes, names, class_parts), count, size=size, keep=keep,
                                generator=seeded(derive_seed(seed, "synthetic-parts", split)))
    images, part_map = render_part_scenes(scenes)
    return PartData(images, scenes.labels, part_map, names, classes, "synthetic_parts", split)


#: The part-annotated sources :func:`part_dataset` reads, and the keys each one's description may have.
PART_SOURCES: dict[str, frozenset[str]] = {
    "synthetic_parts": frozenset({"source", "class_parts", "part_names", "size", "n", "seed", "keep"}),
    "pascal_part": frozenset({"source", "classes", "size", "split_seed", "class_parts"}),
}


def part_dataset(spec: Mapping[str, Any], split: str, *, root: Any = None) -> PartData:
    """A split of the part-annotated data described by ``spec`` (plain JSON-able data, recorded with the
    networks trained on it):

    * ``{"source": "synthetic_parts", "class_parts": {class: [parts]}, "part_names": [...], "size": 32,
      "n": {"train": 8000, ...}, "seed": 0, "keep": 0.8}``: :func:`synthetic_parts` (every key but
      ``class_parts`` optional; ``n`` per split, missing splits at their default size);
    * ``{"source": "pascal_part", "classes": [...], "size": 64, "split_seed": 0}``:
      :func:`~maskdefense.data.load_pascal_part` from ``root``. Its optional ``class_parts`` (which parts each
      class has) is not read here: it travels with the data description to the networks' records.
    """
    from ._pascal_part import load_pascal_part

    source = spec.get("source")
    if source not in PART_SOURCES:
        raise ValueError(f"unknown part data source {source!r}; known: {', '.join(PART_SOURCES)}")
    unknown = sorted(set(spec) - PART_SOURCES[source])
    if unknown:
        raise ValueError(f"part data source {source}: unknown keys {unknown}; known: {sorted(PART_SOURCES[source])}")
    if source == "pascal_part":
        return load_pascal_part(split, root=root, size=int(spec.get("size", 64)), classes=spec.get("classes"),
                                split_seed=int(spec.get("split_seed", 0)))
    if "class_parts" not in spec:
        raise ValueError("part data source synthetic_parts needs class_parts (class -> its part names)")
    n = spec.get("n") or {}
    return synthetic_parts(spec["class_parts"], split, part_names=spec.get("part_names"), size=int(spec.get("size", 32)),
                           n=n.get(split), seed=int(spec.get("seed", 0)), keep=float(spec.get("keep", 0.8)))
