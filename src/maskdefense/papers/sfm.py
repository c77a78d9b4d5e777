"""SFM-Defense (Yu, Wang et al. 2022): the attack settings of Section 6.1 (3) as suites, the loss weights of
Section 6.2, and the training presets of the masker with its classifier (Algorithm 1).

What the paper states (``../shared/papers/004_66ddce0753ab849d.txt``): ResNet-18 classifiers on CIFAR-10 and
SVHN, ResNet-50 on Tiny-ImageNet (64x64); an Attention U-Net mask generator (no sizes); the target model
pre-trained for "several epochs" before Algorithm 1 (Section 5.1); Algorithm 1 trains classifier and masker in
alternation with SGD (no learning rate, batch size or schedule given); the preprocessing is one of feature
squeezing's (Xu et al. [19]: bit-depth reduction, local median filter, non-local means; no parameters given);
loss weights (Section 6.2) ``w1 = 2.5e-3, w2 = w3 = 1`` on CIFAR-10 and SVHN, ``w1 = 0.1, w2 = 0.01, w3 = 100``
on Tiny-ImageNet; 50 epochs (Table 8: "Training Cost (50 epochs)", 231.7 minutes against 78.9 for the
undefended model).

Not here: a Tiny-ImageNet preset (the dataset is not in the catalogue and the model zoo has no ResNet-50;
its loss weights are kept in :data:`LOSS_WEIGHTS`).
"""

from __future__ import annotations

from dataclasses import replace

from ..attacks.suites import Suite, SuiteRow, add_suite
from ..training.presets import CPU_RECIPE, CPU_RECIPE_DIFFERS, Preset, SFMPreset, add_preset

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
#: A masker of width 16 (levels 16-32-64-128) on the CPU, 64 (64-128-256-512, the usual Attention U-Net) full.
MASKER_CPU = {"width": 16, "depth": 4}
MASKER_FULL = {"width": 64, "depth": 4}

_UNSTATED = ("the paper gives no preprocessing parameters: feature squeezing's CIFAR-10 squeezers",
             "the paper names the Attention U-Net without sizes: levels 64-128-256-512")
_FULL_OPT = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "cosine", "weight_decay": 5e-4,
             "batch_size": 128, "crop_padding": 4}
_FULL_DIFFERS = (*_UNSTATED, "SGD (as Algorithm 1) with momentum 0.9, lr 0.01 cosine, weight decay 5e-4, batch "
                 "128, crop augmentation: not stated in the paper")
# A ResNet-18 on SVHN to pre-train the SVHN target model (Section 5.1: "several epochs"; no flips: digits).
add_preset(Preset("resnet18-svhn-full", "svhn", "resnet18", epochs=20, n_eval=10000,
                  **{**_FULL_OPT, "lr": 0.1, "label_smoothing": 0.1, "weight_decay_norm": False},
                  description="ResNet-18 (CIFAR variant, full width) on SVHN for GPU users, 20 epochs: the "
                              "pre-trained target model of the SVHN masker presets"))
# The CPU presets: 8 epochs of Algorithm 1 with the bit-depth or median preprocessing, 4 with non-local means,
# each sized to <= ~60 minutes on 2 CPU cores: one step of 128 images at 32x32 (bfloat16, channels-last) timed
# at 0.66 s for the classifier phase and 0.97 s for the masker phase on one contended core; with the 0.44 s of
# the recipe's uncontended 2-core classifier step (results/bench) and that 1.47 ratio, ~1.1 s per batch of both
# phases, 352 batches of 45000 training images: ~6.5 minutes per epoch; OpenCV's non-local means costs ~0.65 s
# per 128 images and phase, doubling the epoch.
_CPU_EPOCHS = {"bits": 8, "median": 8, "nlm": 4}
for _t, _spec in PREPROCESS.items():
    add_preset(SFMPreset(
        f"sfm-cifar10-{_t}-cpu", "cifar10", "resnet18_half", LOSS_WEIGHTS["cifar10"], init="resnet18-cifar10-cpu",
        masker_kwargs=MASKER_CPU, preprocess=_spec, epochs=_CPU_EPOCHS[_t], n_eval=500, **{**CPU_RECIPE, "lr": 0.05},
        differs=("ResNet-18 at width 1/2, pre-trained by preset resnet18-cifar10-cpu (14 epochs)",
                 "Attention U-Net masker at width 16 (levels 16-32-64-128)",
                 f"{_CPU_EPOCHS[_t]} epochs of Algorithm 1 (paper: {EPOCHS}), sized to train in <= ~60 minutes on "
                 "2 CPU cores", "one-cycle schedule with peak lr 0.05 for both networks", *CPU_RECIPE_DIFFERS,
                 _UNSTATED[0]),
        description=f"SFM-Defense on CIFAR-10 sized for a 2-core CPU: masker and ResNet-18/2 trained by Algorithm 1 "
                    f"with preprocessing {_t}"))
    for _data, _init in (("cifar10", "resnet18-cifar10-full"), ("svhn", "resnet18-svhn-full")):
        add_preset(SFMPreset(
            f"sfm-{_data}-{_t}-full", _data, "resnet18", LOSS_WEIGHTS[_data], init=_init, masker_kwargs=MASKER_FULL,
            preprocess=_spec, epochs=EPOCHS, n_eval=10000, **{**_FULL_OPT, "hflip": _data == "cifar10"},
            differs=(*_FULL_DIFFERS, f"the target model pre-trained by preset {_init}"),
            description=f"SFM-Defense on {_data} as in the paper (ResNet-18, Attention U-Net, {EPOCHS} epochs of "
                        f"Algorithm 1), preprocessing {_t}, for GPU users"))
# The embedded 8x8 digits (demo and tests): the masker alone (no preprocessing), a 3-level masker of width 8.
add_preset(SFMPreset("sfm-digits", "digits", "digits_cnn", LOSS_WEIGHTS["cifar10"], init="plain-digits",
                     masker_kwargs={"width": 8, "depth": 3}, epochs=10, batch_size=64, optimizer="adam", lr=1e-3,
                     n_eval=360, description="a masker trained with the digits CNN by Algorithm 1, no preprocessing "
                                             "(demo and tests)"))
