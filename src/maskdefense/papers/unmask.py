"""UNMASK (Freitas, Chen, Wang and Chau, IEEE Big Data 2020) and Xiong's master thesis on it (Leiden 2021,
``../shared/papers/003_217ebc841d4a871d.txt``: UNMASK with a ResNet-101 classifier carrying four
feature-denoising blocks): class sets, part sets, settings and the thesis' numbers, as data.

From the reference code (safreita1/unmask): the class-to-parts sets ``V`` (``Extract.object_parts``, over the
44 merged PASCAL-Part parts, :data:`maskdefense.data.PASCAL_PART_PARTS`), the class sets (``config.object_dict``;
the code marks ``cs3-1`` and ``cs5-1`` "max separation"), the detection cut (benign when the similarity
exceeds 0.3), the attacks (``train.py``: advertorch PGD and momentum iterative attacks, 20 iterations, step
2.0, L-inf budgets 8 and 16 and L2 budgets 300 and 600, each divided by 255) and the classifier input
(``Resize(150)`` + ``CenterCrop(150)``, no normalisation).

From the thesis: CS3/CS5 are class sets of 3 and 5 classes, "a" the lower and "b" the higher feature overlap
(Sec. 6.1); it lists no classes, so ``CS3a``/``CS3b``/``CS5a``/``CS5b`` are taken as the code's ``cs3-1``/
``cs3-2``/``cs5-1``/``cs5-2`` (the "max separation" sets are the "a" sets), and no overlap values, so
:data:`OVERLAP` is computed here (:func:`maskdefense.data.part_overlap`: the share of a set's parts that belong
to more than one of its classes), which orders each pair as the thesis says. Table 2 (dataset sizes), Table 6
(one denoising block in adversarial training, CIFAR-10) and Table 7 (UNMASK with "Ours" = ResNet-101 with four
embedded-Gaussian denoising blocks, one after each stage, SGD, vs "Baseline" = the original UNMASK with
DenseNet-121). Table 7's L2 columns are headed "eps = 8" and "eps = 16"; the code and the thesis' Table 4 use
300 and 600 for L2: the columns are keyed by the code's budgets.

Here the part extractor is a U-Net on the generated stand-in (:func:`class_set_data`), not a Mask R-CNN on
PASCAL-Part; nothing of this module has been run as an experiment yet.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..data import PASCAL_PART_PARTS, PartData, attribute_matrix, part_overlap, synthetic_parts

_THESIS = "Xiong 2021, master thesis (Leiden), UNMASK with feature denoising"

#: ``Extract.object_parts`` of the reference code (bicycle and motorbike leave out the handlebar, which the
#: code's merging turns into "hand", and the bicycle its headlights).
CLASS_PARTS: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in {
    "sheep": {"ear", "eye", "horn", "torso", "head", "neck", "tail", "muzzle", "leg"},
    "aeroplane": {"stern", "body", "engine", "wheel", "tail", "wing"},
    "dog": {"paw", "nose", "ear", "eye", "torso", "head", "neck", "tail", "muzzle", "leg"},
    "person": {"ear", "nose", "eye", "foot", "torso", "arm", "mouth", "head", "neck", "hair", "hand", "leg", "eyebrow"},
    "cat": {"paw", "nose", "ear", "eye", "torso", "head", "neck", "tail", "leg"},
    "car": {"vehicle_left", "mirror", "door", "headlight", "wheel", "frontside", "vehicle_back", "licenseplate",
            "vehicle_top", "window", "vehicle_right"},
    "bicycle": {"wheel", "saddle"},
    "bird": {"eye", "beak", "foot", "torso", "head", "neck", "tail", "wing", "leg"},
    "tvmonitor": {"screen"},
    "motorbike": {"wheel", "saddle", "headlight"},
    "bus": {"vehicle_left", "mirror", "door", "headlight", "wheel", "frontside", "vehicle_back", "licenseplate",
            "vehicle_top", "window", "vehicle_right"},
    "train": {"coach_front", "coach_right", "coach_left", "headlight", "coach_top", "head", "coach_back"},
    "horse": {"ear", "eye", "torso", "head", "hoof", "neck", "tail", "muzzle", "leg"},
    "pottedplant": {"plant", "pot"},
    "bottle": {"body", "cap"},
    "cow": {"ear", "eye", "horn", "torso", "head", "neck", "tail", "muzzle", "leg"},
}.items()}

#: The thesis' class sets, in the code's class order (its defense breaks similarity ties towards the first).
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "CS3a": ("car", "person", "train"),
    "CS3b": ("person", "dog", "bird"),
    "CS5a": ("dog", "car", "bottle", "train", "person"),
    "CS5b": ("dog", "car", "bird", "train", "person"),
}
#: The reference code's names of the same sets.
CODE_CLASS_SET = {"CS3a": "cs3-1", "CS3b": "cs3-2", "CS5a": "cs5-1", "CS5b": "cs5-2"}
#: Feature overlap of every class set (computed; see the module docstring).
OVERLAP = {name: part_overlap({c: CLASS_PARTS[c] for c in classes}) for name, classes in CLASS_SETS.items()}

#: Detection threshold of the rule ``d >= t``: the code calls an image benign when the similarity exceeds 0.3.
REFERENCE_THRESHOLD = 0.7
#: The reference code's attacks (advertorch; budgets and the step on the 0-255 scale of its code).
ATTACKS = {
    "pgd-linf": {"eps": (8, 16), "norm": "linf", "momentum": None},
    "pgd-l2": {"eps": (300, 600), "norm": "l2", "momentum": None},
    "mia-linf": {"eps": (8, 16), "norm": "linf", "momentum": 1.0},
    "mia-l2": {"eps": (300, 600), "norm": "l2", "momentum": 1.0},
}
ATTACK_SETTINGS = {"steps": 20, "step": 2.0, "random_start": {"pgd": True, "mia": False}, "loss": "cross-entropy (sum)",
                   "notes": ("eps is divided by 255 in the code, the step (2.0) is not: every L-inf step reaches "
                             "the budget's boundary",)}
INPUT_SIZE = 150

#: Table 2: images per split (model K on PASCAL-Part with 44 parts; model M per class set).
TABLE2 = {"K": (7457, 930, 936), "CS3a": (7780, 1099, 2351), "CS3b": (9599, 1399, 2867),
          "CS5a": (11639, 1477, 3179), "CS5b": (13011, 1928, 4129)}

#: Table 6: ResNet-101 without / with one denoising block (after the third stage), CIFAR-10, top-1 accuracy (%):
#: clean training ("benchmark"), adversarial training (PGD L-inf eps 10) on clean and adversarial test images.
TABLE6 = {"resnet101": {"benchmark": 95.400, "at_benign": 81.490, "at_adv": 59.210},
          "resnet101_denoise1": {"benchmark": 95.510, "at_benign": 83.120, "at_adv": 70.100}}
TABLE6_SETTINGS = {"attack": "pgd-linf", "eps": 10, "lr": 0.005, "lr_decay": "10% every 30 epochs", "batch_size": 60,
                   "source": f"{_THESIS}, Table 6"}

#: Table 7's attack columns: (attack, eps on the code's 0-255 scale).
TABLE7_COLUMNS = (("pgd-linf", 8), ("pgd-l2", 300), ("mia-linf", 8), ("mia-l2", 300),
                  ("pgd-linf", 16), ("pgd-l2", 600), ("mia-linf", 16), ("mia-l2", 600))
_T7 = {
    ("ours", "CS5b"): (11.50, 83.97, 90.80, 83.60, 90.26, 72.66, 90.14, 72.61, 89.61),
    ("ours", "CS5a"): (10.77, 87.95, 92.70, 88.68, 92.04, 78.14, 92.42, 79.18, 91.26),
    ("ours", "CS3b"): (29.89, 85.42, 90.97, 85.11, 90.51, 72.86, 90.97, 72.62, 90.34),
    ("ours", "CS3a"): (21.16, 91.37, 93.87, 92.09, 93.45, 85.71, 94.13, 85.28, 93.41),
    ("baseline", "CS5b"): (5.84, 78.54, 88.71, 74.84, 88.50, 62.02, 85.08, 57.57, 84.48),
    ("baseline", "CS5a"): (5.43, 81.88, 91.16, 77.70, 90.63, 65.65, 88.49, 58.45, 87.20),
    ("baseline", "CS3b"): (6.30, 81.55, 89.29, 75.65, 88.98, 67.39, 85.07, 62.19, 84.97),
    ("baseline", "CS3a"): (7.23, 85.88, 92.94, 83.54, 92.39, 73.84, 91.15, 69.29, 90.09),
}
#: Table 7: (model, class set) -> {"no_defense": accuracy (%) of the undefended classifier averaged over the 8
#: attacks, (attack, eps): UNMASK's defense accuracy (%)}; "ours" = ResNet-101 + 4 denoising blocks, "baseline" =
#: DenseNet-121 (gray-box: the attacks see the classifier only).
TABLE7: dict[tuple[str, str], dict[Any, float]] = {
    key: {"no_defense": row[0], **dict(zip(TABLE7_COLUMNS, row[1:]))} for key, row in _T7.items()}
TABLE7_MODELS = {"ours": "resnet101_denoise4", "baseline": "densenet121 (not in the zoo)"}
#: What the thesis' text derives from Table 7 (Sec. 6.4 and the abstract), in %.
TABLE7_CLAIMS = {"ours_no_defense": 18.33, "ours_defended": 87.01, "baseline_defended": 80.48, "gain": 6.53,
                 "baseline_mia_linf16": 61.88, "ours_mia_linf16": 77.42, "gain_mia_linf16": 15.54}


def class_set_parts(name: str) -> dict[str, tuple[str, ...]]:
    """Class -> parts of class set ``name`` (``"CS3a"`` ...), in the set's class order."""
    if name not in CLASS_SETS:
        raise ValueError(f"unknown class set {name!r}; known: {', '.join(CLASS_SETS)}")
    return {c: CLASS_PARTS[c] for c in CLASS_SETS[name]}


def attributes(name: str) -> Tensor:
    """The class-attribute matrix of class set ``name`` over the 44 merged PASCAL-Part parts."""
    return attribute_matrix(CLASS_SETS[name], PASCAL_PART_PARTS, class_set_parts(name))


def class_set_data(name: str, split: str = "train", **kwargs: Any) -> PartData:
    """The generated stand-in (:func:`maskdefense.data.synthetic_parts`) of class set ``name``, over the 44-part
    vocabulary (a part looks the same in every class set); ``kwargs`` go to the generator."""
    return synthetic_parts(class_set_parts(name), split, part_names=PASCAL_PART_PARTS, **kwargs)
