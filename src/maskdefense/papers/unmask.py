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
PASCAL-Part. Presets (each CPU one lists how it differs): the part extractor ``unmask-extractor-cpu`` (every class of
:data:`CLASS_PARTS`, the 44 parts) and, per class set, the classifiers ``unmask-<set>-resnet18-cpu`` (Table 7's
baseline at CPU size) and ``unmask-<set>-resnet18-denoise4-cpu`` (four denoising blocks: Table 7's "Ours");
Table 6's CIFAR-10 models ``unmask-cifar10-resnet18-denoise1-cpu`` (plain twin: ``resnet18-cifar10-cpu``) and their
adversarially trained versions; ``-full`` presets with the thesis' networks and settings for GPU users. The
experiments are :mod:`maskdefense.experiments.unmask`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..data import PASCAL_PART_PARTS, PartData, attribute_matrix, part_overlap, synthetic_parts
from ..training.presets import CPU_RECIPE, CPU_RECIPE_DIFFERS, PartPreset, Preset, add_preset

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


# ---- presets ----------------------------------------------------------------------------------------------------

#: Images per split of the generated data on this CPU: the part extractor's (every class) and each class set's.
EXTRACTOR_SPLITS = {"train": 10000, "val": 1000, "test": 1000}
CLASSIFIER_SPLITS = {"train": 4000, "val": 500, "test": 1000}
#: Seed of the extractor's generated data: other images than the class sets' (seed 0), as PASCAL-Part's are
#: other images than the classifier's in the thesis (Table 2).
EXTRACTOR_SEED = 1


def part_data(class_parts: dict[str, tuple[str, ...]], *, n: dict[str, int] | None = None, size: int = 32,
              seed: int = 0) -> dict[str, Any]:
    """The description (:func:`maskdefense.data.part_dataset`) of the generated stand-in of ``class_parts``
    over the 44-part vocabulary."""
    return {"source": "synthetic_parts", "class_parts": {c: list(p) for c, p in class_parts.items()},
            "part_names": list(PASCAL_PART_PARTS), "size": size, **({"n": dict(n)} if n else {}), "seed": seed}


def preset_name(class_set: str, model: str, size: str = "cpu") -> str:
    """``unmask-cs3a-resnet18-denoise4-cpu`` ...: the classifier of ``class_set`` (``model``: ``resnet18``,
    ``resnet18-denoise4``, ``resnet101``, ``resnet101-denoise4``)."""
    return f"unmask-{class_set.lower()}-{model}-{size}"


#: The CPU-sized classifiers of Table 7: name in the tables -> preset model part.
TABLE7_CPU_MODELS = {"baseline": "resnet18", "ours": "resnet18-denoise4"}
#: Input side of the full presets: the code's 150 rounded to what the U-Net's four halvings divide.
FULL_SIZE = 144
_PARTS_NOT_MASK_RCNN = "a U-Net semantic segmenter (MONAI) in place of Mask R-CNN: the part set needs no instances"
_GENERATED = ("generated stand-in of PASCAL-Part (flat-coloured primitive shapes per part over textured "
              "backgrounds, 32x32; maskdefense.data.synthetic_parts): PASCAL-Part is not on this machine")

add_preset(PartPreset(
    "unmask-extractor-cpu", "segment", part_data(CLASS_PARTS, n=EXTRACTOR_SPLITS, seed=EXTRACTOR_SEED), "part_unet",
    model_kwargs={"channels": [32, 64, 128], "strides": [2, 2], "num_res_units": 2}, epochs=15, batch_size=64,
    lr=2e-3, schedule="cosine", hflip=True,
    differs=(_PARTS_NOT_MASK_RCNN, _GENERATED + f"; {EXTRACTOR_SPLITS['train']} training images of all 16 classes",
             "15 epochs, Adam with a cosine schedule (the code: Mask R-CNN's schedule, 40 epochs)"),
    description="UNMASK's part extractor K on the generated part data (44 parts, every class), CPU-sized"))
add_preset(PartPreset(
    "unmask-extractor-full", "segment", {"source": "pascal_part", "size": FULL_SIZE,
                                         "class_parts": {c: list(p) for c, p in CLASS_PARTS.items()}},
    "part_unet", model_kwargs={"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2},
    epochs=40, batch_size=16, hflip=True,
    differs=(_PARTS_NOT_MASK_RCNN, f"{FULL_SIZE}x{FULL_SIZE} images (Resize + CenterCrop as the code's classifier input)"),
    description="UNMASK's part extractor K on PASCAL-Part (44 merged parts, 40 epochs, flips: the thesis' "
                "augmentation) for GPU users"))

for _set in CLASS_SETS:
    _data = part_data(class_set_parts(_set), n=CLASSIFIER_SPLITS)
    for _key, _model, _kw, _what in (
            ("resnet18", "resnet18_half", {}, "Table 7's baseline at CPU size (the thesis: DenseNet-121)"),
            ("resnet18-denoise4", "resnet18_denoise4", {"width": 0.5},
             "Table 7's 'Ours' at CPU size: four embedded-Gaussian denoising blocks, one after each stage")):
        add_preset(PartPreset(
            preset_name(_set, _key), "classify", _data, _model, model_kwargs=_kw, epochs=8, **CPU_RECIPE,
            differs=("ResNet-18 at width 1/2, CIFAR stem (the thesis: ResNet-101, ImageNet-sized inputs)",
                     _GENERATED + f"; {CLASSIFIER_SPLITS['train']} training images",
                     "8 epochs", *CPU_RECIPE_DIFFERS),
            description=f"UNMASK's classifier M on class set {_set}: {_what}"))
    _full = {"source": "pascal_part", "classes": list(CLASS_SETS[_set]), "size": FULL_SIZE,
             "class_parts": {c: list(p) for c, p in class_set_parts(_set).items()}}
    for _key, _model, _what in (("resnet101", "resnet101", "without blocks (DenseNet-121, the thesis' baseline, is "
                                                            "not in the zoo)"),
                                ("resnet101-denoise4", "resnet101_denoise4", "with four denoising blocks (Table 7's "
                                                                             "'Ours')")):
        add_preset(PartPreset(
            preset_name(_set, _key, "full"), "classify", _full, _model, model_kwargs={"stem": "imagenet"}, epochs=30,
            batch_size=32, optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=2e-4,
            differs=("PASCAL-Part images of the set's classes, labelled by their largest object (the thesis: VOC 2010 "
                     "+ ImageNet to train, Flickr to test; Table 2)", "no ImageNet pre-training",
                     f"{FULL_SIZE}x{FULL_SIZE} inputs (the code: 150)"),
            description=f"UNMASK's classifier M on class set {_set}: ResNet-101 {_what}, the code's SGD settings "
                        "(30 epochs, lr 1e-3, momentum 0.9, weight decay 2e-4, batch 32), for GPU users"))

#: Table 6 on this CPU: adversarial training with Wong et al.'s "fast" FGSM with a random start (one attack step
#: per batch, ~2x a plain step; PGD-10 would be ~6x) at eps 8/255, where it is known to train without catastrophic
#: overfitting; the thesis trains with PGD at eps 10 (its evaluation budget, kept for the test).
TABLE6_CPU_AT = {"name": "adversarial", "eps": 8 / 255, "mode": "fast"}
TABLE6_CPU_AT_EPOCHS = 6
TABLE6_FULL_AT = {"name": "adversarial", "eps": 10 / 255, "mode": "pgd", "steps": 7}
#: Table 6's models on this CPU: (row, adversarially trained) -> preset. The plain ResNet-18/2 is the recipe's.
TABLE6_PRESETS = {("resnet101", False): "resnet18-cifar10-cpu",
                  ("resnet101_denoise1", False): "unmask-cifar10-resnet18-denoise1-cpu",
                  ("resnet101", True): "unmask-cifar10-resnet18-at-cpu",
                  ("resnet101_denoise1", True): "unmask-cifar10-resnet18-denoise1-at-cpu"}
_T6_SIZE = ("ResNet-18 at width 1/2, CIFAR stem (the thesis: ResNet-101)",)
_T6_AT = (f"FGSM with a random start ('fast' adversarial training, alpha 1.25 eps) at eps 8/255, "
          f"{TABLE6_CPU_AT_EPOCHS} epochs (the thesis: PGD at eps 10/255, lr 0.005 decayed every 30 epochs, batch 60)",)
add_preset(Preset(
    TABLE6_PRESETS[("resnet101_denoise1", False)], "cifar10", "resnet18_denoise1", model_kwargs={"width": 0.5},
    epochs=14, n_eval=1000, **CPU_RECIPE,
    differs=(*_T6_SIZE, "one denoising block after stage 3, as the thesis", "14 epochs, as its plain twin "
             "resnet18-cifar10-cpu", *CPU_RECIPE_DIFFERS),
    description="Table 6, 'Modified ResNet' benchmark row at CPU size: ResNet-18/2 with one denoising block"))
for _model, _kw, _row, _what in (("resnet18_half", {}, "resnet101", "ResNet-18/2"),
                                  ("resnet18_denoise1", {"width": 0.5}, "resnet101_denoise1",
                                   "ResNet-18/2 with one denoising block after stage 3")):
    add_preset(Preset(
        TABLE6_PRESETS[(_row, True)], "cifar10", _model, model_kwargs=_kw, epochs=TABLE6_CPU_AT_EPOCHS, n_eval=1000,
        task=TABLE6_CPU_AT, **CPU_RECIPE, differs=(*_T6_SIZE, *_T6_AT, *CPU_RECIPE_DIFFERS),
        description=f"Table 6, adversarial training at CPU size: {_what} (the thesis' {_row} row)"))
for _model, _row in (("resnet101", "resnet101"), ("resnet101_denoise1", "resnet101_denoise1")):
    for _adv in (None, TABLE6_FULL_AT):
        add_preset(Preset(
            f"unmask-cifar10-{_row.replace('_', '-')}{'-at' if _adv else ''}-full", "cifar10", _model, epochs=90,
            batch_size=60, optimizer="sgd", lr=0.005, momentum=0.9, n_eval=10000, task=_adv,
            differs=("a constant learning rate (the thesis decays it by 10% every 30 epochs; no step schedule here)",
                     "90 epochs (the thesis gives no count)")
            + (("PGD with 7 steps of 2.5 eps / 7 (the reference code's training steps; the thesis gives none)",)
               if _adv else ()),
            description=f"Table 6, {_row} {'adversarially (PGD-Linf eps 10/255)' if _adv else 'plainly'} trained on "
                        "CIFAR-10 as the thesis, for GPU users"))
