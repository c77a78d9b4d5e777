"""SFM-Defense (Yu, Wang et al. 2022): the attack settings of Section 6.1 (3) as suites, the loss weights of
Section 6.2, and the training presets of the masker with its classifier (Algorithm 1).

What the paper states (``../shared/papers/004_66ddce0753ab849d.txt``): ResNet-18 classifiers on CIFAR-10 and
SVHN, ResNet-50 on Tiny-ImageNet (64x64); an Attention U-Net mask generator (no sizes); the target model
pre-trained for "several epochs" before Algorithm 1 (Section 5.1); Algorithm 1 trains classifier and masker in
alternation with SGD (no learning rate, batch size or schedule given); the preprocessing is one of feature
squeezing's (Xu et al. [19]: bit-depth reduction, local median filter, non-local means; no parameters given);
loss weights (Section 6.2) ``w1 = 2.5e-3, w2 = w3 = 1`` on CIFAR-10 and SVHN, ``w1 = 0.1, w2 = 0.01, w3 = 100``
on Tiny-ImageNet; 50 epochs (Table 8, CIFAR-10: "Training Cost (50 epochs)", 231.7 minutes against 78.9 for
the undefended model; no epochs are given for SVHN and Tiny-ImageNet: their full presets take 50 too).

Tables 1-8 are kept as data (:data:`TABLES`, :data:`WHITE_BOX`, :data:`TIME_COST`), Figures 3-5 as their
claims (the text carries no values of them).

Presets per dataset (:data:`CLASSIFIER` names the classifier; preset names follow it): ``<classifier>-<data>-cpu``
(the pre-trained target model and the undefended model; for CIFAR-10 in :mod:`maskdefense.training.presets`) and
``<classifier>-<data>-surrogate-cpu`` (its seed + 1 twin, the black-box source model), ``sfm-<data>-<t>-cpu`` and
``sfm-<data>-<t>-full`` for each preprocessing ``t`` of :data:`PREPROCESS`, ``sfm-<data>-median-sweep-cpu``; the
full presets start from ``<classifier>-<data>-full``. Tiny-ImageNet (not on the development machine: its CPU
presets' times are estimated from FLOPs, not measured) has the paper's ResNet-50, at width 1/4 on the CPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..attacks.suites import Suite, SuiteRow, add_suite
from ..training.presets import (CPU_RECIPE, CPU_RECIPE_DIFFERS, RESNET18_CIFAR10_CPU, Preset, SFMPreset,
                                add_preset)

_SFM_SRC = "Yu, Wang et al. 2022, SFM-Defense (Section 4: attack settings)"

add_suite(Suite(
    "sfm-transfer", "SFM black-box attacks: PGD, MIM, Diverse at Linf 8/255 and 16/255 (30 steps of 1/255)",
    tuple(
        SuiteRow(f"{lab}-{k}", f"{spec}:eps={k}/255,steps=30,{step}=1/255")
        for lab, spec, step in (("PGD", "pgd-linf", "abs_stepsize"), ("MIM", "mi-fgsm", "stepsize"),
                                ("Diverse", "di-mi-fgsm", "stepsize"))
        for k in (8, 16)
    ),
    _SFM_SRC, "cifar10", None,
    ("'Diverse' is taken as M-DI2-FGSM (momentum + diverse inputs, p=0.5); the paper gives no DI "
     "parameters. Run with threat black-box (transfer from a surrogate).",),
))
add_suite(Suite(
    "sfm-graybox", "SFM gray/white-box attacks: FGSM and PGD at Linf 8/255, 16/255; CW (5 x 20 steps, c0=0.1)",
    (
        SuiteRow("FGSM-8", "fgsm-linf:eps=8/255"), SuiteRow("FGSM-16", "fgsm-linf:eps=16/255"),
        SuiteRow("PGD-8", "pgd-linf:eps=8/255,steps=30,abs_stepsize=1/255"),
        SuiteRow("PGD-16", "pgd-linf:eps=16/255,steps=30,abs_stepsize=1/255"),
        SuiteRow("CW", "cw-l2:eps=inf,binary_search_steps=5,steps=20,initial_const=0.1"),
    ),
    _SFM_SRC, "cifar10", None, ("CW is unbounded (eps=inf) as in the paper; its norms are recorded.",),
))

#: Loss weights ``(w1, w2, w3)`` of Equation 2 per dataset (Section 6.2).
LOSS_WEIGHTS = {"cifar10": (2.5e-3, 1.0, 1.0), "svhn": (2.5e-3, 1.0, 1.0), "tiny-imagenet": (0.1, 0.01, 100.0)}
#: The classifier per dataset (Section 6.1: "ResNet18" on CIFAR-10 and SVHN, "Resnet50" on Tiny-ImageNet); the
#: presets are named after it.
CLASSIFIER = {"cifar10": "resnet18", "svhn": "resnet18", "tiny-imagenet": "resnet50"}
_ARCH = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}
#: The preprocessing ``T`` per preset suffix: feature squeezing's CIFAR-10 squeezers (Xu et al., NDSS 2018, and
#: their code's joint CIFAR-10 configuration: 5-bit depth, 2x2 median filter, non-local means "13-3-2": search
#: window 13, patch 3, strength 2), for want of parameters in the paper. ``{"name": ..., **options}`` for
#: ``maskdefense.ops.squeeze.create_squeezer``; :data:`DEFENSE_SPECS` gives the same as defense specs.
PREPROCESS = {
    "bits": {"name": "bits", "bits": 5},
    "median": {"name": "median", "size": 2},
    "nlm": {"name": "nlmeans", "search": 13, "patch": 3, "h": 2},
}
#: The squeezer options of each preprocessing in the defense spec syntax (``squeeze:`` and ``sfm:...,``).
DEFENSE_SPECS = {t: ",".join([f"method={o['name']}", *(f"{k}={v}" for k, v in o.items() if k != "name")])
                 for t, o in PREPROCESS.items()}
#: Epochs of Algorithm 1 in the paper (Table 8).
EPOCHS = 50
#: Images per L1 and L2 norm of the masker's loss (``norm_group``; :mod:`maskdefense.training.tasks.sfm`): read per
#: image, Equations 3 and 5 with the paper's weights make the masker the identity (reconstruction outweighs sparsity
#: ~8x on CIFAR-10); Algorithm 1 computes them on "a mini-batch", and over 64 CIFAR-10 images ``w1 * ||X||_1`` and
#: ``||X||_2`` balance (222 and 228; 32 images: 114 and 166, 128: 460 and 335). The paper gives no batch size.
NORM_GROUP = 64
_NORM_DIFFERS = (f"the loss's L1 and L2 norms over groups of {NORM_GROUP} images of the mini-batch (Algorithm 1's "
                 "mini-batch; the paper's batch size is not stated): per image its weights give an all-ones mask",)
#: A masker of width 16 (levels 16-32-64-128) on the CPU, 64 (64-128-256-512, the usual Attention U-Net) full.
MASKER_CPU = {"width": 16, "depth": 4}
MASKER_FULL = {"width": 64, "depth": 4}

_UNSTATED = ("the paper gives no preprocessing parameters: feature squeezing's CIFAR-10 squeezers",
             "the paper names the Attention U-Net without sizes: levels 64-128-256-512")
_FULL_OPT = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "cosine", "weight_decay": 5e-4,
             "batch_size": 128, "crop_padding": 4}
_FULL_DIFFERS = (*_UNSTATED, "SGD (as Algorithm 1) with momentum 0.9, lr 0.01 cosine, weight decay 5e-4, batch "
                 "128, crop augmentation: not stated in the paper")
# Tiny-ImageNet: the registry's ResNet-50 keeps the CIFAR variant's 3x3 stride-1 stem without max pooling, so a 64x64
# image ends in 8x8 feature maps (ImageNet's 7x7 stem and pooling would leave 2x2); crops padded by 8 (1/8 of the
# side, as 4 of CIFAR-10's 32).
_TINY_DIFFERS = ("ResNet-50 with the 3x3 stride-1 stem and no max pooling (8x8 final feature maps at 64x64): the "
                 "paper does not say how its ResNet-50 takes 64x64 images", "crops padded by 8 (1/8 of the side)")
#: What the full presets change of ``_FULL_OPT`` per dataset (no flips of digits).
_FULL_RECIPE = {"cifar10": {"hflip": True}, "svhn": {"hflip": False},
                "tiny-imagenet": {"hflip": True, "crop_padding": 8}}
# A ResNet-18 on SVHN to pre-train the SVHN target model (Section 5.1: "several epochs"; no flips: digits).
_PRETRAIN_OPT = {**_FULL_OPT, "lr": 0.1, "label_smoothing": 0.1, "weight_decay_norm": False}
add_preset(Preset("resnet18-svhn-full", "svhn", "resnet18", epochs=20, n_eval=10000, **_PRETRAIN_OPT,
                  description="ResNet-18 (CIFAR variant, full width) on SVHN for GPU users, 20 epochs: the "
                              "pre-trained target model of the SVHN masker presets"))
# The Tiny-ImageNet target model: a whole training from scratch (the paper: "several epochs" of pre-training).
add_preset(Preset("resnet50-tiny-imagenet-full", "tiny-imagenet", "resnet50", epochs=90, n_eval=10000,
                  **{**_PRETRAIN_OPT, **_FULL_RECIPE["tiny-imagenet"]},
                  differs=(_TINY_DIFFERS[0], "90 epochs of SGD (momentum 0.9, lr 0.1 cosine, weight decay 5e-4 off "
                           "batch norm, batch 128), label smoothing 0.1, crop + flip: the paper states no pre-training "
                           "recipe", _TINY_DIFFERS[1]),
                  description="ResNet-50 (3x3 stem, full width) on Tiny-ImageNet for GPU users, 90 epochs: the "
                              "pre-trained target model of the Tiny-ImageNet masker presets"))
# The CPU presets: 8 epochs of Algorithm 1 with the bit-depth or median preprocessing, 4 with non-local means,
# each sized to <= ~60 minutes on 2 CPU cores: one step of 128 images at 32x32 (bfloat16, channels-last) timed
# at 0.66 s for the classifier phase and 0.97 s for the masker phase on one contended core; with the 0.44 s of
# the recipe's uncontended 2-core classifier step (results/bench) and that 1.47 ratio, ~1.1 s per batch of both
# phases, 352 batches of 45000 training images: ~6.5 minutes per epoch; OpenCV's non-local means costs ~0.65 s
# per 128 images and phase, doubling the epoch.
_TITLE = {"cifar10": "CIFAR-10", "svhn": "SVHN", "tiny-imagenet": "Tiny-ImageNet"}
#: The classifier of the CPU presets per dataset: (model, its options, short name, how it differs from the paper's).
_CPU_NET = {"cifar10": ("resnet18_half", {}, "ResNet-18/2", "ResNet-18 at width 1/2"),
            "svhn": ("resnet18_half", {}, "ResNet-18/2", "ResNet-18 at width 1/2"),
            "tiny-imagenet": ("resnet50", {"width": 0.25}, "ResNet-50/4", "ResNet-50 at width 1/4")}


def _sfm_cpu(data: str, t: str, epochs: int, init_epochs: int, sized: str = "<= ~60 minutes",
             extra: tuple[str, ...] = (), **recipe: Any) -> SFMPreset:
    """The CPU preset ``sfm-<data>-<t>-cpu``: the dataset's CPU classifier (:data:`_CPU_NET`) pre-trained by preset
    ``<classifier>-<data>-cpu`` (``init_epochs``), the masker of width 16, ``epochs`` of Algorithm 1 (to train in
    ``sized`` on 2 cores) with the CPU recipe (changed by ``recipe``) at peak lr 0.05; ``extra``: more differences."""
    model, kwargs, short, what = _CPU_NET[data]
    init = f"{CLASSIFIER[data]}-{data}-cpu"
    no_flip = ("no horizontal flips (digits)",) if recipe.get("hflip") is False else ()
    return add_preset(SFMPreset(
        f"sfm-{data}-{t}-cpu", data, model, LOSS_WEIGHTS[data], classifier_kwargs=kwargs, init=init,
        masker_kwargs=MASKER_CPU, preprocess=PREPROCESS[t], norm_group=NORM_GROUP, epochs=epochs, n_eval=500,
        **{**CPU_RECIPE, **recipe, "lr": 0.05},
        differs=(f"{what}, pre-trained by preset {init} ({init_epochs} epochs)",
                 "Attention U-Net masker at width 16 (levels 16-32-64-128)",
                 f"{epochs} epoch{'s' * (epochs > 1)} of Algorithm 1 (paper: {EPOCHS}), sized to train in {sized} on "
                 "2 CPU cores",
                 *(d.replace("peak lr 0.1", "peak lr 0.05, both networks") for d in CPU_RECIPE_DIFFERS), *no_flip,
                 *extra, _UNSTATED[0], *_NORM_DIFFERS),
        description=f"SFM-Defense on {_TITLE[data]} sized for a 2-core CPU: masker and {short} trained by "
                    f"Algorithm 1 with preprocessing {t}"))


def _classifier_cpu(data: str, epochs: int, differs: tuple[str, ...], **recipe: Any) -> None:
    """The CPU classifier ``<classifier>-<data>-cpu`` (the masker presets' pre-trained target model and the
    undefended model) and its black-box transfer surrogate ``<classifier>-<data>-surrogate-cpu`` (seed + 1)."""
    model, kwargs, short, _ = _CPU_NET[data]
    for suffix, offset, what in (("cpu", 0, f"the target model pre-trained for the {_TITLE[data]} masker presets "
                                            "and the undefended model"),
                                 ("surrogate-cpu", 1, "the black-box transfer surrogate (seed + 1)")):
        add_preset(Preset(f"{CLASSIFIER[data]}-{data}-{suffix}", data, model, model_kwargs=kwargs, epochs=epochs,
                          n_eval=1000, seed_offset=offset, **{**CPU_RECIPE, **recipe}, differs=differs,
                          description=f"{short} on {_TITLE[data]} with the CPU recipe: {what}"))


#: (dataset, preprocessing) -> the CPU preset.
_CPU = {("cifar10", t): _sfm_cpu("cifar10", t, e, 14) for t, e in {"bits": 8, "median": 8, "nlm": 4}.items()}
for _t, _spec in PREPROCESS.items():
    for _data, _recipe in _FULL_RECIPE.items():
        _init = f"{CLASSIFIER[_data]}-{_data}-full"
        add_preset(SFMPreset(
            f"sfm-{_data}-{_t}-full", _data, CLASSIFIER[_data], LOSS_WEIGHTS[_data], init=_init,
            masker_kwargs=MASKER_FULL, preprocess=_spec, norm_group=NORM_GROUP, epochs=EPOCHS, n_eval=10000,
            **{**_FULL_OPT, **_recipe},
            differs=(*_FULL_DIFFERS, *_NORM_DIFFERS, f"the target model pre-trained by preset {_init}",
                     *(_TINY_DIFFERS if _data == "tiny-imagenet" else ())),
            description=f"SFM-Defense on {_data} as in the paper ({_ARCH[CLASSIFIER[_data]]}, Attention U-Net, "
                        f"{EPOCHS} epochs of Algorithm 1), preprocessing {_t}, for GPU users"))
# The embedded 8x8 digits (demo and tests): the masker alone (no preprocessing), a 3-level masker of width 8.
add_preset(SFMPreset("sfm-digits", "digits", "digits_cnn", LOSS_WEIGHTS["cifar10"], init="plain-digits",
                     masker_kwargs={"width": 8, "depth": 3}, norm_group=NORM_GROUP, epochs=10, batch_size=64,
                     optimizer="adam", lr=1e-3, n_eval=360,
                     description="a masker trained with the digits CNN by Algorithm 1, no preprocessing (demo and "
                                 "tests)"))

# ---- the models of the experiments (maskdefense.experiments.sfm)

#: The preprocessing of the full rows of the experiments. The paper shows one "Ours" row in Tables 1-8 and never
#: says which of its three preprocessings it is; the median filter is taken: fully trained on the CPU (8 epochs
#: of Algorithm 1; non-local means gets 4 in the same time) and cheap in every attack step of the gray- and
#: white-box threats (OpenCV's non-local means costs about as much as the classifier's forward pass).
MAIN_PREPROCESS = "median"
# The independently trained black-box source model (Section 6.1 (1): "another independently trained ResNet18"):
# the classifier's preset with another seed, i.e. another initialization and data order.
add_preset(replace(
    RESNET18_CIFAR10_CPU, name="resnet18-cifar10-surrogate-cpu", seed_offset=1,
    description="the black-box transfer surrogate of the CIFAR-10 ResNet-18: preset resnet18-cifar10-cpu trained "
                "with the seed + 1 (another initialization and data order)"))
# SVHN on the CPU (the data is not on the development machine; the presets mirror CIFAR-10's, sized for the
# ~1.5x larger training split: a classifier epoch ~3.7 minutes, an epoch of Algorithm 1 ~10 minutes).
_classifier_cpu("svhn", 8, ("ResNet-18 at width 1/2", "8 epochs, sized to train in ~30 minutes on 2 CPU cores",
                            *CPU_RECIPE_DIFFERS, "no horizontal flips (digits)"), hflip=False)
_CPU.update({("svhn", t): _sfm_cpu("svhn", t, e, 8, hflip=False)
             for t, e in {"bits": 5, "median": 5, "nlm": 3}.items()})
# Tiny-ImageNet on the CPU (the data is not on the development machine: times estimated, not measured). Per 64x64
# image, ResNet-50/4 (3x3 stem) costs 0.33 GMAC, 2.3x the CIFAR-10 ResNet-18/2 (0.14), and the width-16 masker 4x
# its CIFAR-10 cost (4x the pixels), on 90,000 training images (2x CIFAR-10's 45,000): a classifier epoch ~15
# minutes, an epoch of Algorithm 1 ~50 (non-local means, 4x the pixels, ~+40).
_ESTIMATED = "times estimated from FLOPs, not measured (the data is not on the development machine)"
_classifier_cpu("tiny-imagenet", 6, ("ResNet-50 at width 1/4 (bottleneck widths 16-32-64-128)", _TINY_DIFFERS[0],
                                     "6 epochs, sized to train in ~1.5 hours on 2 CPU cores", _ESTIMATED,
                                     *CPU_RECIPE_DIFFERS, _TINY_DIFFERS[1]), crop_padding=8)
_CPU.update({("tiny-imagenet", t): _sfm_cpu("tiny-imagenet", t, e, 6, sized="~1.5-2 hours",
                                            extra=(*_TINY_DIFFERS, _ESTIMATED), crop_padding=8)
             for t, e in {"bits": 2, "median": 2, "nlm": 1}.items()})
#: One epoch of Algorithm 1 per point of the w1 sweep (Figure 3) and the loss ablation (Figure 5): the main CPU
#: preset shortened (~6.5 minutes on CIFAR-10), its loss weights set per point.
SWEEP_EPOCHS = 1
for _data in _TITLE:
    _p = _CPU[_data, MAIN_PREPROCESS]
    add_preset(replace(_p, name=f"sfm-{_data}-{MAIN_PREPROCESS}-sweep-cpu", epochs=SWEEP_EPOCHS,
                       differs=tuple(f"{SWEEP_EPOCHS} epoch of Algorithm 1 per point (paper: {EPOCHS})"
                                     if "epochs of Algorithm 1" in d else d for d in _p.differs),
                       description=f"preset {_p.name} shortened to {SWEEP_EPOCHS} epoch: the points of the w1 sweep "
                                   "and of the loss ablation"))

# ---- the paper's numbers (Section 6.3-6.5), as printed

#: Columns of the black-box tables (1, 3, 5) and of the gray- and white-box tables (2, 4, 6, 7): the labels of
#: the suites ``sfm-transfer`` and ``sfm-graybox``.
BLACK_BOX_COLUMNS = ("Clean", "PGD-8", "PGD-16", "MIM-8", "MIM-16", "Diverse-8", "Diverse-16")
GRAY_BOX_COLUMNS = ("Clean", "FGSM-8", "FGSM-16", "PGD-8", "PGD-16", "CW")


def _table(columns: tuple[str, ...], text: str) -> dict[str, dict[str, float]]:
    """Lines ``Method v1 v2 ...`` (percentages as printed) -> ``{method: {column: fraction}}``."""
    out = {}
    for line in text.strip().splitlines():
        name, *values = line.split()
        if len(values) != len(columns):
            raise ValueError(f"{name}: {len(values)} values for {len(columns)} columns")
        out[name] = {c: round(float(v) / 100, 4) for c, v in zip(columns, values)}
    return out


#: Tables 1-6: ``(dataset, threat) -> (table number, {method: {column: accuracy}})``; "Ours" is SFM-Defense.
#: Accuracy of the defended model on the adversarial test images (Section 6.3: "the average accuracy of the
#: defended clean samples and the adversarial examples on the target model"). Table 4's TVM row is kept as
#: printed (FGSM-8 equal to its clean accuracy, PGD-16 above PGD-8).
TABLES = {
    ("cifar10", "black-box"): (1, _table(BLACK_BOX_COLUMNS, """
        Vanilla      87.1 34.8 21.3 24.4 12.2 20.8 10.4
        FS           85.0 44.5 28.4 32.5 15.4 28.3 13.5
        TVM          82.7 50.5 23.6 36.6 16.2 32.4 14.1
        Quilt        77.5 64.8 52.9 53.6 34.1 51.3 30.5
        PixelDefend  78.9 46.9 29.1 34.9 16.0 31.1 13.8
        Sensitivity  77.6 62.2 56.3 53.8 45.4 51.0 44.5
        Ours         86.2 64.6 40.3 59.7 33.3 55.1 31.3""")),
    ("cifar10", "gray-box"): (2, _table(GRAY_BOX_COLUMNS, """
        Vanilla      87.1 14.2 11.8  7.2  6.8  8.2
        FS           85.0 18.4 13.4  8.2  6.9  8.6
        TVM          82.7 25.5 13.3  7.9  6.8  8.6
        Quilt        77.5 32.4 17.8 25.8 10.8 35.5
        PixelDefend  78.9 18.2 13.0  8.2  6.8 10.2
        Sensitivity  77.6 34.3 27.0 43.8 33.4 51.1
        Ours         86.2 56.8 34.2 51.5 34.7 84.9""")),
    ("svhn", "black-box"): (3, _table(BLACK_BOX_COLUMNS, """
        Vanilla      93.8 30.2 13.6 30.0 10.0 28.8  9.3
        FS           92.7 33.2 15.5 32.6 11.4 31.6 10.7
        TVM          92.6 34.3 15.3 33.6 11.1 32.7 10.4
        Quilt        93.3 36.0 16.7 35.1 11.6 34.2 11.1
        PixelDefend  92.5 30.9 13.6 30.6  9.9 29.4  9.3
        Sensitivity  92.5 57.9 29.8 60.6 25.2 60.4 24.2
        Ours         91.3 70.0 52.6 67.1 50.3 65.8 48.1""")),
    ("svhn", "gray-box"): (4, _table(GRAY_BOX_COLUMNS, """
        Vanilla      93.8 18.0  5.9  8.8  3.7  3.8
        FS           92.7 20.2  6.6 11.1  4.6  5.1
        TVM          92.6 92.6 27.1  7.3 10.5  3.8
        Quilt        93.3 21.7  6.8 12.1  4.4  4.7
        PixelDefend  92.5 18.2  5.5  9.4  3.6  3.9
        Sensitivity  92.5 35.8 16.5 40.4 17.5 35.5
        Ours         91.3 64.1 50.7 42.1 17.9 87.9""")),
    ("tiny-imagenet", "black-box"): (5, _table(BLACK_BOX_COLUMNS, """
        Vanilla      69.9 19.3 10.3 17.4  8.3 14.8  7.5
        FS           66.6 20.2 10.3 17.1  8.4 14.8  7.4
        TVM          67.1 20.2 10.9 17.5  8.7 14.8  7.7
        Quilt        64.6 35.1 24.6 31.6 14.2 28.1 12.4
        Sensitivity  60.1 37.8 32.8 36.1 23.0 33.8 19.9
        Ours         58.4 40.3 30.1 38.7 22.5 37.2 18.2""")),
    ("tiny-imagenet", "gray-box"): (6, _table(GRAY_BOX_COLUMNS, """
        Vanilla      69.9  7.4  4.5  7.1  5.9 11.4
        FS           66.6  8.0  6.1  8.7  6.4  0.0
        TVM          67.1 12.3  6.4  8.0  5.5 12.3
        Quilt        64.6 15.4  8.2 12.8  8.8 20.4
        Sensitivity  60.1 17.1  9.9 23.0 17.2 35.0
        Ours         58.4 24.9 15.6 25.3 19.9 53.0""")),
}
#: The methods of Tables 1-6 this project does not run, and why: their rows appear as the paper's numbers only.
NOT_RUN = {
    "Quilt": "image quilting needs a database of about a million clean-image patches and a nearest-neighbour "
             "search for every patch (see maskdefense.ops.squeeze)",
    "PixelDefend": "needs a trained PixelCNN and a per-pixel greedy purification",
    "Sensitivity": "the high-low sensitivity adaptive defense [26], an image reconstruction the paper times at "
                   "9.6 minutes per 10,000 images (Table 8)",
}
#: Table 7: SFM-Defense against adaptive (white-box) attacks, ``dataset -> {column: accuracy}``.
WHITE_BOX = _table(GRAY_BOX_COLUMNS, """
    cifar10        86.2 51.5 37.4 11.0  4.7  1.6
    svhn           91.3 66.2 43.4 29.6 17.1 31.7
    tiny-imagenet  58.4 10.4  7.6  0.4  0.1  0.2""")
#: Table 8 (CIFAR-10): minutes of training (50 epochs; the classifier's and the defense's networks together)
#: and of defending 10,000 images (defense and target model), per method.
TIME_COST = {
    "None": {"training_min": 78.9, "defending_min": 0.3},
    "FS(Baseline)": {"training_min": 78.9, "defending_min": 0.3},
    "PixelDefend": {"training_min": 208.3, "defending_min": 0.8},
    "Sensitivity": {"training_min": 78.9, "defending_min": 9.6},
    "Ours": {"training_min": 231.7, "defending_min": 0.8},
}
#: Figure 3 (CIFAR-10, PGD Linf 8/255): the text gives no values or axis range, only these claims.
FIG3_CLAIMS = (
    "with suitable w2 and w3 and w1 in its feasible region, clean accuracy falls as w1 grows",
    "and the accuracy on adversarial examples (black-box and gray-box PGD Linf 8/255) rises as w1 grows",
    "the reported w1 (2.5e-3 on CIFAR-10 and SVHN) is the one with the highest sum of clean and black-box "
    "adversarial accuracy",
)
#: Figure 4: what the defended samples look like.
FIG4_CLAIMS = (
    "on CIFAR-10 (and Tiny-ImageNet) the masker removes the pixels of the background, keeping the features that "
    "contribute most to the classification",
    "on SVHN it tends to enhance semantic features",
)
#: Figure 5 and Section 6.6: the loss without its semantic (No_Seg) or reconstruction (No_Recon) term.
FIG5_CLAIMS = (
    "without the semantic loss or the reconstruction loss, part of the defended samples keep very little "
    "semantic information and the rest are almost all 0s (Section 4.3's collapse)",
    "the clean and adversarial accuracy are then 'basically the same as those of random guess'",
)
#: The values of w1 of our Figure 3 sweep per dataset: 0.4, 1, 4 and 16 times the reported w1 (Section 6.2).
SWEEP_W1 = {"cifar10": (1e-3, 2.5e-3, 1e-2, 4e-2), "svhn": (1e-3, 2.5e-3, 1e-2, 4e-2),
            "tiny-imagenet": (0.04, 0.1, 0.4, 1.6)}
#: The loss ablation (Figure 5): factors of the dataset's ``(w2, w3)`` (1 keeps a term at its weight, 0 drops it).
ABLATION = {"complete": (1.0, 1.0), "no semantic loss (w2 = 0)": (0.0, 1.0),
            "no reconstruction loss (w3 = 0)": (1.0, 0.0)}
