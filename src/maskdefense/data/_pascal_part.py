"""PASCAL-Part (Chen et al., CVPR 2014): part masks of the PASCAL VOC 2010 images, read for users who have it.

Layout (not downloaded here; PASCAL-Part's ``trainval.tar.gz`` holds ``Annotations_Part/``, the VOC 2010
``VOCtrainval_03-May-2010.tar`` holds ``JPEGImages/``)::

    <root>/VOCdevkit/VOC2010/Annotations_Part/2008_000002.mat ...
    <root>/VOCdevkit/VOC2010/JPEGImages/2008_000002.jpg ...

Each ``.mat`` file holds a struct ``anno`` with ``imname`` and ``objects`` (a 1 x n struct array of ``class``,
``class_ind``, ``mask`` and ``parts``, a 1 x m struct array of ``part_name`` and ``mask``); it is read with
``scipy.io.loadmat`` (data only, no code), the JPEG with Pillow.

Part names are merged as in the reference code of the part-based defense (safreita1/unmask,
``preprocess.CreateSegMasks.filter_part_name``): left/right/numbered instances become one part (``lear`` ->
``ear``, ``wheel_3`` -> ``wheel``, ``lfho`` -> ``hoof``, the sides of buses and cars -> ``vehicle_left`` ...,
of train coaches -> ``coach_left`` ...), the sides of a train's head and the whole coaches are dropped, and
the substring tests run in the code's order, so that ``handlebar`` becomes ``hand`` (a quirk kept as is).
The 44 merged names are :data:`PASCAL_PART_PARTS` (the code's order).

An image's part map writes the parts of its objects in file order (a later part wins a pixel, as the code's
``_mat2map``); its label is the class of its largest object. Images are resized (shorter side to ``size``,
bilinear; part maps nearest) and centre-cropped to ``size x size``, as the reference code's classifier input
(``Resize`` + ``CenterCrop``). The split is 80/10/10 (train/val/test) of the sorted annotation files under a
seeded ``torch.randperm``: the code's ratios, not its assignment (it shuffles an ``os.listdir`` order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..seeding import seeded
from ._catalog import resolve_data_root
from ._types import DataError, PartData

__all__ = ["PASCAL_PART_CLASSES", "PASCAL_PART_PARTS", "PASCAL_PART_DIR", "merge_part_name", "load_pascal_part"]

PASCAL_PART_DIR = "VOCdevkit/VOC2010"
PASCAL_PART_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
PASCAL_PART_PARTS = (
    "plant", "torso", "licenseplate", "cap", "eyebrow", "tail", "ear", "horn", "mouth", "frontside", "mirror",
    "wheel", "vehicle_left", "nose", "screen", "arm", "neck", "muzzle", "coach_left", "coach_back", "head",
    "headlight", "stern", "pot", "window", "coach_right", "coach_front", "beak", "leg", "engine", "saddle", "hand",
    "vehicle_back", "paw", "hoof", "vehicle_top", "vehicle_right", "eye", "wing", "hair", "door", "body",
    "coach_top", "foot",
)
#: (substrings, merged name or None = dropped), tested in this order.
_MERGE: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("ear",), "ear"), (("eye",), "eye"), (("leg",), "leg"), (("pa",), "paw"), (("brow",), "eyebrow"),
    (("hand",), "hand"), (("arm",), "arm"), (("horn",), "horn"), (("wheel",), "wheel"), (("foot",), "foot"),
    (("cleftside",), "coach_left"), (("crightside",), "coach_right"), (("cfrontside",), "coach_front"),
    (("cbackside",), "coach_back"), (("croofside",), "coach_top"),
    (("hroofside", "hleftside", "hrightside", "hfrontside", "hbackside", "coach"), None),
    (("rightside",), "vehicle_right"), (("leftside",), "vehicle_left"), (("roofside",), "vehicle_top"),
    (("backside",), "vehicle_back"), (("wing",), "wing"), (("engine",), "engine"), (("window",), "window"),
    (("headlight",), "headlight"), (("door",), "door"), (("plate",), "licenseplate"), (("mirror",), "mirror"),
    (("lbho", "lfho", "rbho", "rfho"), "hoof"),
)
_PART_ID = {p: i + 1 for i, p in enumerate(PASCAL_PART_PARTS)}
_SPLITS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


def merge_part_name(name: str) -> str | None:
    """The merged part name of a PASCAL-Part part name, or ``None`` for a dropped one (see the module
    docstring)."""
    for subs, merged in _MERGE:
        if any(s in name for s in subs):
            return merged
    return None if name in PASCAL_PART_CLASSES else name


def _structs(value: object) -> list:
    """The records of a MATLAB struct array as loaded by scipy (``(1, n)``; an empty field is ``(0, 0)``)."""
    return list(np.asarray(value).reshape(-1))


def _text(value: object) -> str:
    return str(np.asarray(value).reshape(-1)[0])


def _read_annotation(path: Path) -> tuple[str, str, np.ndarray]:
    """``(image name, label = class of the largest object, part map (H, W) uint8)`` of one ``.mat`` file."""
    from scipy.io import loadmat

    try:
        anno = loadmat(str(path))["anno"][0, 0]
        objects = _structs(anno["objects"])
        masks = [np.asarray(o["mask"]) for o in objects]
        if not objects:
            raise ValueError("no objects")
        part_map = np.zeros(masks[0].shape, dtype=np.uint8)
        for obj in objects:
            for part in _structs(obj["parts"]):
                name = _text(part["part_name"])
                merged = merge_part_name(name)
                if merged is not None and merged not in _PART_ID:
                    raise DataError(f"{path}: part {name!r} merges to {merged!r}, not a PASCAL-Part part")
                if merged is not None:
                    part_map[np.asarray(part["mask"]) > 0] = _PART_ID[merged]
        largest = int(np.argmax([int((m > 0).sum()) for m in masks]))
        return _text(anno["imname"]), _text(objects[largest]["class"]), part_map
    except (KeyError, IndexError, ValueError, TypeError, OSError) as e:
        raise DataError(f"{path} is not a PASCAL-Part annotation (anno.imname, anno.objects with class, mask, "
                        f"parts.part_name, parts.mask): {e}") from None


def _square(image: Any, size: int, resample: int) -> np.ndarray:
    """A PIL image resized (shorter side to ``size``) and centre-cropped to ``size x size``."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(image.resize((nw, nh), resample).crop((left, top, left + size, top + size)))


def load_pascal_part(split: str = "train", *, root: str | os.PathLike[str] | None = None, size: int = 64,
                     classes: Sequence[str] | None = None, split_seed: int = 0, limit: int | None = None) -> PartData:
    """A split of PASCAL-Part as :class:`PartData` (see the module docstring).

    root : data root (:func:`resolve_data_root`); the files are under ``<root>/VOCdevkit/VOC2010``.
    classes : keep the images whose label is one of these, labelled in this order (default: the 20 VOC
        classes).
    split_seed : seed of the permutation that splits the annotation files.
    limit : keep the first ``limit`` images of the split.
    """
    from PIL import Image

    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(_SPLITS)}")
    keep = tuple(classes) if classes is not None else PASCAL_PART_CLASSES
    unknown = sorted(set(keep) - set(PASCAL_PART_CLASSES))
    if unknown:
        raise ValueError(f"unknown PASCAL-Part classes {unknown}; known: {', '.join(PASCAL_PART_CLASSES)}")
    base = resolve_data_root(root) / PASCAL_PART_DIR
    files = sorted((base / "Annotations_Part").glob("*.mat"))
    if not files:
        raise DataError(f"no PASCAL-Part annotations in {base / 'Annotations_Part'}: unpack PASCAL-Part's "
                        f"trainval.tar.gz (Annotations_Part/*.mat) and the VOC 2010 JPEGImages/ into {base}")
    lo, hi = _SPLITS[split]
    order = torch.randperm(len(files), generator=seeded(split_seed)).tolist()
    chosen = sorted(order[int(lo * len(files)):int(hi * len(files))])
    images, labels, maps = [], [], []
    for i in chosen:
        if limit is not None and len(images) >= limit:
            break
        name, label, part_map = _read_annotation(files[i])
        if label not in keep:
            continue
        jpg = base / "JPEGImages" / f"{name}.jpg"
        if not jpg.is_file():
            raise DataError(f"{files[i].name} annotates {jpg}, which is missing: put the VOC 2010 JPEGImages/ in {base}")
        with Image.open(jpg) as im:
            rgb = im.convert("RGB")
        if rgb.size != part_map.shape[::-1]:
            raise DataError(f"{jpg} is {rgb.size[0]}x{rgb.size[1]} but its annotation {part_map.shape[1]}x{part_map.shape[0]}")
        images.append(_square(rgb, size, Image.BILINEAR))
        maps.append(_square(Image.fromarray(part_map), size, Image.NEAREST))
        labels.append(keep.index(label))
    if not images:
        raise DataError(f"the {split} split of PASCAL-Part in {base} has no image of the classes {list(keep)}")
    return PartData(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).contiguous(),
                    torch.tensor(labels, dtype=torch.int64), torch.from_numpy(np.stack(maps)), PASCAL_PART_PARTS,
                    keep, "pascal_part", split)
