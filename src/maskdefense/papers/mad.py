"""MAD (Xu, Zhang, Zhao, Fang: A Mask-Based Adversarial Defense Scheme, Algorithms 2022, 15, 461): the
paper's numbers, attack suites and presets, as data. Nothing here runs anything; the experiments in
:mod:`maskdefense.experiments.mad` read it.

Suites: the attack rows of the journal version, Table 4 (VGG16, CIFAR-10) and Table 5 (LeNet/MNIST,
ResNet18/SVHN). Each row carries the paper's "Attack" (the MAD model without masking on adversarial
examples made against it), "Defense" (the MAD model with masking and the 5-copy vote) and "Improvement"
accuracies, as fractions, for side-by-side tables. The paper used Foolbox with default parameters except
epsilon; so do these suites. Each table also has a "Benign" row (the defense's clean accuracy), stored as
:attr:`Suite.paper_benign` -- with it a MAD table has 24 rows, 23 of them attacks.

Beside the suites: the numbers of Tables 1-3 (VGG16/CIFAR-10: mask rate, masking at training and/or
test time, cell sizes), of the benign accuracies, and the settings of Figures 2-5, which the experiments
in :mod:`maskdefense.experiments.mad` put beside theirs. Numbers are typed as printed (percent) and
stored as fractions rounded to 4 places.

Table 6 (VGG16, CIFAR-10) compares MAD with MagNet, Denoised Smoothing, Parseval networks and PCL on the Table 4
attacks: :data:`TABLE6`, and the presets of those baselines (and of PGD adversarial training, the reference row
a user would pick instead) sized for this CPU, each with the settings of its own paper.

Notes on the paper's tables: Table 1 lists "PGD L1 eps=1" where Tables 3 and 4 list eps=15 for the same
row; we follow Table 4 (15): its 3/4 cell equals Table 3's and Table 4's eps=15 row (85.44%).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..attacks.suites import Suite, SuiteRow, add_suite
from ..training.presets import CPU_RECIPE, CPU_RECIPE_DIFFERS, DenoiserPreset, Preset, add_preset

_NAMES = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "cw": "CW", "deepfool": "DeepFool"}
_NORM_LABEL = {"l1": "L1", "l2": "L2", "linf": "Linf"}


def _frac(percent: float) -> float:
    """A percentage as printed in the paper, as a fraction (4 places: the paper prints 2 decimals)."""
    return round(percent / 100, 4)


def _mad_rows(rows: list[tuple[str, str, float, float, float, float]]) -> tuple[SuiteRow, ...]:
    out = []
    for attack, norm, eps, a, d, imp in rows:
        spec = f"{attack}-{norm}:eps={eps:g}"
        label = f"{_NAMES[attack]} {_NORM_LABEL[norm]} eps={eps:g}"
        out.append(SuiteRow(label, spec, {"attack": _frac(a), "defense": _frac(d), "improvement": _frac(imp)}))
    return tuple(out)


# (attack, norm, eps, Attack %, Defense %, Improvement %) -- MAD journal version, Table 4.
_TABLE4_CIFAR10 = [
    ("fgsm", "l1", 15, 35.48, 82.63, 47.15), ("fgsm", "l1", 20, 33.02, 79.25, 46.23),
    ("fgsm", "l2", 0.3, 38.29, 84.62, 46.33), ("fgsm", "l2", 0.4, 35.27, 81.89, 46.62),
    ("fgsm", "linf", 0.01, 33.02, 81.05, 48.03), ("fgsm", "linf", 0.02, 28.27, 68.77, 40.50),
    ("bim", "l1", 10, 10.23, 84.71, 74.48), ("bim", "l1", 15, 6.70, 80.91, 74.21),
    ("bim", "l2", 0.3, 9.43, 83.21, 73.78), ("bim", "l2", 0.4, 8.06, 80.88, 72.82),
    ("bim", "linf", 0.01, 3.16, 81.80, 78.64), ("bim", "linf", 0.015, 1.06, 77.06, 76.00),
    ("pgd", "l1", 15, 8.75, 85.44, 76.69), ("pgd", "l1", 20, 6.36, 83.48, 77.12),
    ("pgd", "l2", 0.3, 12.47, 86.42, 73.95), ("pgd", "l2", 0.4, 9.01, 84.45, 75.44),
    ("pgd", "linf", 0.01, 6.13, 84.78, 78.65), ("pgd", "linf", 0.015, 2.30, 81.45, 79.15),
    ("cw", "l2", 1, 15.89, 91.28, 75.39),
    ("deepfool", "l2", 0.6, 34.64, 84.20, 49.56), ("deepfool", "l2", 0.8, 31.81, 81.19, 49.38),
    ("deepfool", "linf", 0.01, 35.72, 85.23, 49.51), ("deepfool", "linf", 0.015, 32.26, 80.44, 48.18),
]

# MAD journal version, Table 5, LeNet + MNIST.
_TABLE5_MNIST = [
    ("fgsm", "l1", 10, 44.12, 68.94, 24.82), ("fgsm", "l1", 20, 28.35, 49.50, 21.15),
    ("fgsm", "l2", 0.8, 34.85, 58.60, 23.75), ("fgsm", "l2", 1.0, 30.28, 52.82, 22.54),
    ("fgsm", "linf", 0.03, 36.26, 61.82, 25.56), ("fgsm", "linf", 0.04, 28.58, 50.31, 21.73),
    ("bim", "l1", 4, 8.98, 59.49, 50.51), ("bim", "l1", 6, 2.26, 44.17, 41.91),
    ("bim", "l2", 0.2, 16.55, 69.23, 52.68), ("bim", "l2", 0.3, 3.79, 49.04, 45.25),
    ("bim", "linf", 0.015, 11.72, 70.94, 59.22), ("bim", "linf", 0.02, 3.62, 56.33, 52.71),
    ("pgd", "l1", 4, 16.04, 71.79, 55.75), ("pgd", "l1", 6, 3.37, 54.75, 51.38),
    ("pgd", "l2", 0.2, 22.98, 77.87, 54.89), ("pgd", "l2", 0.4, 1.26, 48.85, 47.59),
    ("pgd", "linf", 0.015, 11.64, 70.90, 59.26), ("pgd", "linf", 0.02, 3.27, 56.38, 53.11),
    ("cw", "l2", 1.5, 0.20, 93.39, 93.19),
    ("deepfool", "l2", 0.6, 32.62, 61.05, 28.43), ("deepfool", "l2", 0.8, 26.49, 51.39, 24.90),
    ("deepfool", "linf", 0.05, 24.77, 47.26, 22.49), ("deepfool", "linf", 0.07, 22.50, 39.76, 17.26),
]

# MAD journal version, Table 5, ResNet18 + SVHN.
_TABLE5_SVHN = [
    ("fgsm", "l1", 15, 50.47, 76.84, 26.37), ("fgsm", "l1", 20, 45.85, 70.25, 24.40),
    ("fgsm", "l2", 0.4, 53.17, 80.40, 27.23), ("fgsm", "l2", 0.6, 46.77, 71.48, 24.71),
    ("fgsm", "linf", 0.01, 57.12, 85.40, 28.28), ("fgsm", "linf", 0.02, 46.06, 68.95, 22.89),
    ("bim", "l1", 10, 15.46, 80.37, 64.91), ("bim", "l1", 12, 11.54, 75.85, 64.31),
    ("bim", "l2", 0.25, 21.75, 84.40, 62.65), ("bim", "l2", 0.3, 16.59, 81.37, 64.78),
    ("bim", "linf", 0.01, 16.06, 86.31, 70.25), ("bim", "linf", 0.02, 2.58, 71.00, 68.42),
    ("pgd", "l1", 14, 15.09, 84.14, 69.05), ("pgd", "l1", 16, 12.11, 82.35, 70.24),
    ("pgd", "l2", 0.4, 16.40, 84.22, 67.82), ("pgd", "l2", 0.5, 12.17, 81.37, 69.20),
    ("pgd", "linf", 0.01, 10.10, 84.45, 74.35), ("pgd", "linf", 0.02, 4.69, 80.51, 75.82),
    ("cw", "l2", 1.8, 21.70, 96.05, 74.35),
    ("deepfool", "l2", 0.5, 59.78, 87.09, 27.31), ("deepfool", "l2", 0.7, 53.87, 82.22, 28.35),
    ("deepfool", "linf", 0.01, 57.10, 88.06, 30.96), ("deepfool", "linf", 0.02, 46.39, 72.98, 26.59),
]

_MAD_SRC = "Xu, Zhang, Zhao, Fang: A Mask-Based Adversarial Defense Scheme, Algorithms 2022, 15, 461"
_MAD_NOTE = ("Foolbox attacks with default parameters except epsilon; adversarial examples only from "
             "test images the attacked model classifies correctly (gray-box: made against the model "
             "without masking).",)

#: dataset -> the suite of the paper's attack table for it, and that table's name in the paper.
TABLE_SUITE = {"mnist": "mad-table5-mnist", "cifar10": "mad-table4-cifar10", "svhn": "mad-table5-svhn"}
TABLE_NAME = {"mnist": "Table 5 (left)", "cifar10": "Table 4", "svhn": "Table 5 (right)"}
#: The "Benign" row of each attack table: the clean accuracy of MAD (5 votes).
BENIGN = {"cifar10": _frac(82.65), "mnist": _frac(96.13), "svhn": _frac(91.65)}

for _ds, _title, _rows in (("cifar10", "MAD Table 4: VGG16 / CIFAR-10", _TABLE4_CIFAR10),
                           ("mnist", "MAD Table 5: LeNet / MNIST", _TABLE5_MNIST),
                           ("svhn", "MAD Table 5: ResNet18 / SVHN", _TABLE5_SVHN)):
    add_suite(Suite(TABLE_SUITE[_ds], _title, _mad_rows(_rows), f"{_MAD_SRC}, {TABLE_NAME[_ds]}", _ds, BENIGN[_ds],
                    _MAD_NOTE))

# ---- Tables 1-3 (VGG16 / CIFAR-10, journal version, Section 4). Rows: "Benign", then the 23 attack rows of
# Table 4 (suite mad-table4-cifar10) in order.
SWEEP_ROWS = ("Benign",) + tuple(r.label for r in _mad_rows(_TABLE4_CIFAR10))


def _by_row(columns: tuple[Any, ...], values: list[tuple[float, ...]]) -> dict[str, dict[Any, float]]:
    assert len(values) == len(SWEEP_ROWS) and all(len(v) == len(columns) for v in values)
    return {label: {c: _frac(v) for c, v in zip(columns, row)} for label, row in zip(SWEEP_ROWS, values)}


#: Table 1: mask rate (train and test; 8x8 cells at training, 4x4 at test). Rate 0: the plain VGG16, unmasked.
TABLE1_RATES = ("0", "1/3", "1/2", "3/4", "4/5")
TABLE1 = _by_row(TABLE1_RATES, [
    (84.18, 85.31, 84.59, 82.65, 76.14),
    (63.53, 70.17, 78.37, 82.63, 85.30), (63.01, 64.82, 73.70, 79.25, 82.14), (67.36, 75.95, 82.46, 84.62, 87.55),
    (66.23, 70.18, 78.33, 81.89, 84.66), (48.88, 68.87, 76.07, 81.05, 83.74), (40.76, 53.77, 61.30, 68.77, 70.61),
    (59.02, 67.66, 79.63, 84.71, 87.88), (58.23, 51.27, 68.89, 80.91, 84.91), (61.86, 61.60, 75.69, 83.21, 87.04),
    (61.57, 49.33, 68.02, 80.88, 84.25), (38.29, 57.77, 72.21, 81.80, 86.14), (37.15, 39.75, 58.60, 77.06, 82.61),
    (58.49, 64.60, 79.17, 85.44, 88.11), (57.69, 54.85, 73.67, 83.48, 86.89), (62.30, 71.87, 82.82, 86.42, 89.19),
    (61.63, 62.71, 77.28, 84.45, 87.83), (40.29, 65.37, 77.61, 84.78, 88.26), (37.16, 49.63, 67.64, 81.45, 85.63),
    (63.11, 95.46, 95.87, 91.28, 93.24), (53.97, 74.01, 80.90, 84.20, 87.22), (52.61, 68.15, 76.07, 81.19, 83.86),
    (50.70, 75.72, 82.95, 85.23, 87.59), (44.32, 67.31, 75.12, 80.44, 83.81),
])
#: Table 3: (training cell, test cell) at rate 3/4.
TABLE3_CELLS = ((4, 2), (4, 4), (8, 2), (8, 4), (8, 8))
TABLE3 = _by_row(TABLE3_CELLS, [
    (73.23, 76.92, 63.11, 82.65, 82.89),
    (86.63, 83.84, 85.34, 82.63, 75.68), (83.20, 79.39, 82.74, 79.25, 71.72), (89.54, 87.13, 86.17, 84.62, 79.84),
    (86.63, 83.41, 85.34, 81.89, 75.11), (86.10, 82.11, 84.42, 81.05, 73.63), (73.64, 67.07, 73.93, 68.77, 59.87),
    (89.21, 85.66, 87.64, 84.71, 75.67), (84.62, 79.36, 85.61, 80.91, 65.50), (87.52, 83.55, 86.12, 83.21, 71.88),
    (83.64, 78.06, 85.50, 80.88, 65.82), (86.60, 81.86, 86.47, 81.80, 68.67), (81.26, 72.97, 83.62, 77.06, 56.05),
    (88.99, 84.76, 86.64, 85.44, 76.14), (85.78, 80.08, 86.23, 83.48, 71.13), (90.35, 87.03, 88.07, 86.42, 78.77),
    (88.01, 83.48, 87.20, 84.45, 74.79), (88.64, 84.05, 86.61, 84.78, 73.89), (84.57, 77.20, 84.46, 81.45, 65.54),
    (94.78, 95.25, 89.53, 91.28, 93.94), (88.54, 87.10, 85.03, 84.20, 80.31), (85.73, 82.75, 82.65, 81.19, 75.53),
    (90.33, 88.21, 85.42, 85.23, 80.42), (86.03, 82.66, 82.16, 80.44, 74.92),
])
#: Table 2: (masked at training, masked at test) -> "Benign" and four attack rows (rate 3/4, 5 votes).
TABLE2_ATTACKS = ("BIM Linf eps=0.01", "PGD Linf eps=0.01", "CW L2 eps=1", "DeepFool Linf eps=0.01")
TABLE2 = {key: {c: _frac(v) for c, v in zip(("Benign",) + TABLE2_ATTACKS, row)} for key, row in {
    (False, False): (84.18, 38.29, 40.29, 63.11, 50.70),
    (True, False): (84.65, 3.16, 6.13, 15.89, 35.72),
    (False, True): (49.39, 67.98, 69.37, 70.06, 67.98),
    (True, True): (82.65, 81.80, 84.78, 91.28, 85.23),
}.items()}
#: Clean accuracy with masking at training and/or test time (5 votes when masked at test): Table 2's "Benign"
#: column for CIFAR-10; for MNIST only MAD itself (Table 5's "Benign" row).
CLEAN_ABLATION = {"cifar10": {key: row["Benign"] for key, row in TABLE2.items()},
                  "mnist": {(True, True): BENIGN["mnist"]}}

# ---- Figures (plots without tables; what they show)
FIG2_NOTE = ("Figure 2 of the paper (VGG16, CIFAR-10, rate 3/4) is a plot without a table; its text gives "
             "84.18% for the original VGG16 and 82.65% for the MAD model at 5 votes.")
#: Figure 3: accuracy of a plain model when only part of each perturbation's pixels is kept; the attack families
#: it shows (the first, smaller-epsilon row of each in the attack table) and the fractions kept.
FIG3_ATTACKS = ("FGSM Linf", "BIM Linf", "PGD Linf", "PGD L2", "CW L2", "DeepFool L2")
FIG3_KEPT = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Figure 4: masks at several rates (largest cell); Figure 5: at several cell sizes (rate 3/4).
FIG4_RATES = (("1/3", 1 / 3), ("1/2", 1 / 2), ("3/4", 3 / 4))
FIG5_CELLS = (2, 4, 8)
FIG5_RATE = 3 / 4

# MAD (journal version, Algorithms 2022): Adam lr 1e-3, 5 votes; MNIST 7x7 cells train and test;
# CIFAR-10/SVHN 8x8 cells at training, 4x4 at test, rate 3/4. The paper does not give epochs or batch size.
add_preset(Preset("mad-mnist-paper", "mnist", "lenet5", epochs=20, train_cell=7, test_cell=7, n_eval=10000,
            description="MAD LeNet/MNIST as in the paper (epochs and batch size are not given there; ours)"))
add_preset(Preset("mad-mnist-cpu", "mnist", "lenet5", epochs=12, train_cell=7, test_cell=7, n_eval=1000,
            differs=("12 epochs (paper: not stated)", "attacks evaluated on 1000 correctly classified test images"),
            description="MAD LeNet/MNIST on CPU: same model and masking as the paper"))
add_preset(Preset("mad-mnist-cell4-cpu", "mnist", "lenet5", epochs=12, train_cell=4, test_cell=4, n_eval=1000,
            differs=("4x4-pixel cells (a 7x7 grid of cells): the other reading of the paper's '7x7 grids'",),
            description="MAD LeNet/MNIST with 4x4-pixel cells (sensitivity check of the cell-size reading)"))
add_preset(Preset("plain-mnist-cpu", "mnist", "lenet5", epochs=12, n_eval=1000,
            description="LeNet/MNIST without masking, same budget as mad-mnist-cpu"))
add_preset(Preset("mad-cifar10-paper", "cifar10", "vgg16", epochs=100, train_cell=8, test_cell=4, n_eval=10000,
            description="MAD VGG16/CIFAR-10 as in the paper (full width; epochs not stated there)"))
add_preset(Preset("plain-cifar10-paper", "cifar10", "vgg16", epochs=100, n_eval=10000,
            description="VGG16/CIFAR-10 without masking as in the paper (full width, Adam; epochs not stated there)"))
# CIFAR-10 on CPU: VGG16 at width 1/2 with the CPU training recipe (training.presets.CPU_RECIPE). The masked
# model starts from the plain one (fine-tuning, stated in `differs`); mad-cifar10-scratch-cpu is the paper's
# from-scratch setting at the same width.
_CPU_SIZE = ("VGG16 at width 1/2 (1/4 of the FLOPs)",)
_ATTACK_BUDGET = ("300 test images for gray-box and transfer attacks, the first 50 for the adaptive threat",
                  "Carlini-Wagner with fewer steps (library default 9x10000 is out of reach)")
PLAIN_CIFAR10 = add_preset(Preset(
    "plain-cifar10-cpu", "cifar10", "vgg16_half", epochs=27, n_eval=500, **CPU_RECIPE,
    differs=(*_CPU_SIZE, "27 epochs, sized to train in <= 45 minutes on 2 CPU cores", *CPU_RECIPE_DIFFERS),
    description="VGG16 (width 1/2) on CIFAR-10 without masking: the undefended model and transfer surrogate"))
_FINE_TUNED = (*_CPU_SIZE, "masked training fine-tunes plain-cifar10-cpu for 15 epochs (peak lr 0.05) instead of "
               "training from scratch (paper: Adam, epochs not stated)", *CPU_RECIPE_DIFFERS)
MAD_CIFAR10 = add_preset(Preset(
    "mad-cifar10-cpu", "cifar10", "vgg16_half", epochs=15, n_eval=300, train_cell=8, test_cell=4,
    **{**CPU_RECIPE, "lr": 0.05}, init="plain-cifar10-cpu", differs=(*_FINE_TUNED, *_ATTACK_BUDGET),
    description="MAD VGG16/CIFAR-10 sized for a 2-core CPU (8x8 cells at rate 3/4 in training, 4x4 at test)"))
#: The black-box transfer surrogate of each attack table: an independently trained plain model. On CIFAR-10
#: it cannot be plain-cifar10-cpu, the starting point of mad-cifar10-cpu's fine-tuning (transfer from it would
#: not be black-box); ResNet-18/2 is trained independently (another architecture: a weaker transfer attacker
#: than a second VGG16 seed, which the CPU budget did not include).
TRANSFER_SURROGATE = {"mnist": "plain-mnist-cpu", "cifar10": "resnet18-cifar10-cpu", "svhn": "plain-svhn-cpu"}
add_preset(replace(MAD_CIFAR10, name="mad-cifar10-scratch-cpu", epochs=30, lr=0.1, init=None,
                   differs=(*_CPU_SIZE, "30 epochs from scratch", *CPU_RECIPE_DIFFERS, *_ATTACK_BUDGET),
                   description="MAD VGG16/CIFAR-10 trained from scratch as in the paper, CPU-sized"))
# Table 1 (mask-rate sweep; rate used at training and test) and Table 3 (train/test cell sizes) of the paper:
# mad-cifar10-cpu with another rate or training cell. Rate 0 is plain-cifar10-cpu.
_SWEEP = ("100 test images for attacks", "gray-box attacks only")
for _num, _den in ((1, 3), (1, 2), (4, 5)):
    add_preset(replace(MAD_CIFAR10, name=f"mad-cifar10-rate{_num}_{_den}-cpu", train_rate=_num / _den,
                       test_rate=_num / _den, n_eval=100, differs=(*_FINE_TUNED, *_SWEEP),
                       description=f"MAD Table 1 column {_num}/{_den}: mad-cifar10-cpu with mask rate {_num}/{_den}"))
add_preset(replace(MAD_CIFAR10, name="mad-cifar10-train4-cpu", train_cell=4, n_eval=100,
                   differs=(*_FINE_TUNED, *_SWEEP),
                   description="MAD Table 3 columns 'training 4x4': mad-cifar10-cpu trained with 4x4 cells"))
# The first CPU presets (before the recipe): VGG16 at width 1/4, 20 epochs of Adam, no augmentation. Kept for
# the accuracy-against-time comparison (results/recipe-cifar10) and the provenance of the older results.
add_preset(Preset("mad-cifar10-adam-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, train_cell=8,
                  test_cell=4, n_eval=300,
                  differs=("VGG16 at width 1/4 (1/16 of the FLOPs)", "20 epochs (paper: not stated)", *_ATTACK_BUDGET),
                  description="MAD VGG16/CIFAR-10, the first CPU preset (Adam as in the paper, no augmentation)"))
add_preset(Preset("plain-cifar10-adam-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, n_eval=500,
                  description="VGG16 width 1/4 on CIFAR-10 without masking, the first CPU preset (Adam, 20 epochs)"))
add_preset(Preset("mad-svhn-paper", "svhn", "resnet18", epochs=30, train_cell=8, test_cell=4, n_eval=10000,
            description="MAD ResNet18/SVHN as in the paper"))
add_preset(Preset("mad-svhn-cpu", "svhn", "resnet18_narrow", epochs=8, train_cell=8, test_cell=4, n_eval=300,
            differs=("ResNet18 at width 1/4", "8 epochs (paper: not stated)",
                     "300 test images for gray-box and transfer attacks, the first 50 for the adaptive threat",
                     "Carlini-Wagner with fewer steps (library default 9x10000 is out of reach)"),
            description="MAD ResNet18/SVHN sized for a 2-core CPU"))
add_preset(Preset("plain-svhn-cpu", "svhn", "resnet18_narrow", epochs=8, n_eval=300,
            description="ResNet18 width 1/4 on SVHN without masking, same budget as mad-svhn-cpu (transfer surrogate)"))

# The embedded default (scikit-learn digits, 8x8): 2x2 cells (16 cells), rate 1/2.
add_preset(Preset("mad-digits", "digits", "digits_cnn", epochs=30, batch_size=64, train_cell=2, train_rate=0.5,
            test_cell=2, test_rate=0.5, votes=9, n_eval=360,
            description="MAD on the embedded 8x8 digits (demo and tests): 2x2 cells, rate 1/2"))
add_preset(Preset("plain-digits", "digits", "digits_cnn", epochs=30, batch_size=64, n_eval=360,
            description="digits CNN without masking"))


# ---- Table 6 (VGG16 / CIFAR-10): MAD against four defenses "none of [which] uses adversarial samples in the
# training phase", on the Table 4 attacks; the paper gives only each defense's accuracy (no threat model is
# stated: by Table 4's protocol the examples are made against the network without the defense).
TABLE6_DEFENSES = ("magnet", "denoised-smoothing", "parseval", "pcl", "mad")
TABLE6_NAMES = {"magnet": "MagNet", "denoised-smoothing": "Denoised Smoothing", "parseval": "Parseval networks",
                "pcl": "PCL", "mad": "MAD", "pgd-at": "PGD adversarial training"}
#: Row (``SWEEP_ROWS``: "Benign", then the Table 4 attack rows) -> defense -> accuracy.
TABLE6 = {label: dict(zip(TABLE6_DEFENSES, (_frac(v) for v in row))) for label, row in zip(SWEEP_ROWS, [
    (82.32, 77.92, 77.89, 83.47, 82.65),
    (67.41, 81.97, 43.20, 74.94, 82.63), (65.68, 76.50, 33.11, 70.53, 79.25), (72.15, 85.88, 52.41, 79.54, 84.62),
    (69.75, 81.70, 42.69, 75.32, 81.89), (57.81, 82.83, 44.22, 75.56, 81.05), (44.96, 65.25, 20.75, 62.72, 68.77),
    (66.56, 80.11, 45.23, 64.03, 84.71), (62.63, 68.58, 26.22, 48.03, 80.91), (67.63, 77.36, 38.57, 61.26, 83.21),
    (65.73, 68.06, 24.96, 48.34, 80.88), (51.34, 75.51, 29.54, 59.83, 81.80), (42.84, 62.41, 13.52, 43.31, 77.06),
    (67.08, 79.83, 37.84, 66.63, 85.44), (64.66, 72.81, 24.64, 53.18, 83.48), (71.98, 84.65, 48.20, 76.08, 86.42),
    (69.44, 79.17, 35.14, 66.70, 84.45), (56.92, 81.17, 36.89, 72.22, 84.78), (47.79, 70.74, 19.35, 54.74, 81.45),
    (92.58, 99.74, 43.42, 89.48, 91.28),
    (63.84, 65.04, 34.10, 49.95, 84.20), (60.45, 57.97, 44.51, 47.68, 81.19), (62.79, 81.43, 30.49, 58.80, 85.23),
    (54.26, 71.68, 9.49, 53.28, 80.44),
])}
TABLE6_CLAIM = "MAD outperforms these state-of-the-art defense approaches in most cases"
#: The implementations MAD's comparison ran (its Section 3.3).
TABLE6_CODE = {"magnet": "GokulKarthik/MagNet.pytorch", "denoised-smoothing": "microsoft/denoised-smoothing",
               "parseval": "mathialo/parsnet (Keras constraint)", "pcl": "aamir-mustafa/pcl-adversarial-defense"}

# The baselines' settings, from their papers and reference code (MAD: "default settings"; it states none).
#: Denoised Smoothing (Salman et al. 2020; microsoft/denoised-smoothing): DnCNN 17 x 64, Adam lr 1e-3, batch 256,
#: 90 epochs (lr / 10 every 30), noise sigma in {0.12, 0.25, 0.5, 1.0} on CIFAR-10 (0.25 here: its main
#: CIFAR-10 setting; MAD does not say which), the stability objective, optionally from an MSE-trained denoiser.
#: Cohen et al.'s PREDICT: n = 100 noisy copies, alpha = 0.001 (abstentions count as errors).
SMOOTHING = {"sigma": 0.25, "n": 100, "alpha": 0.001}
#: Parseval networks (Cisse et al. 2017): retraction beta = 0.0003 after every step.
PARSEVAL_BETA = 0.0003
#: PCL (Mustafa et al. 2019; pcl_training.py): weights 1 and 1e-4, centre learning rates 0.5 and 1e-4 against the
#: model's 0.01 (SGD), fine-tuning a softmax-trained network. On VGG16 the feature layer is the pooled output of
#: the convolutions (the input of the linear classifier; 256-d at width 1/2, 512-d at full width): VGG16 has no
#: fully connected layer before its classifier, and no branch is added, so the fine-tuned network keeps the plain
#: architecture (the reference's ResNet-110 adds a 1024-d layer and uses both).
#: The start of the fine-tuning, measured on plain-cifar10-cpu (1024 training images): the pooled features' mean
#: squared norm is 52 and their squared distance to their class mean 3.1, so with the reference's N(0, 1) centres
#: the proximity term starts at ~310 against a cross-entropy of 0.56. Until the centres reach the class means (each
#: step moves them ~10% of the way: lr 0.5 on 2 n_k / N ~ 0.2) it pulls the features towards random points, and
#: clean accuracy drops before it recovers (digits, one epoch: 95% -> 81%, 89% after three; with the centres
#: started at the class means, no drop); after that the weighting is the reference's (proximity ~3, 5x the CE).
PCL = {"weight_prox": 1.0, "weight_conprox": 1e-4, "centre_lr": [0.5, 1e-4]}
#: PGD adversarial training (Madry et al. 2018, CIFAR-10): eps 8/255, 7 steps of 2/255, random start.
PGD_AT = {"eps": 8 / 255, "steps": 7, "alpha": 2 / 255}

# CPU presets: VGG16 at width 1/2 fine-tuned from plain-cifar10-cpu (92 s/epoch on clean CIFAR-10 with the recipe),
# the DnCNN trained on its own in front of it. Estimates on the 2-core CPU, one job at a time, in docstrings.
_FROM_PLAIN = ("fine-tunes plain-cifar10-cpu (the paper: trained as its reference code trains; MAD does not say)",)
add_preset(Preset(
    "parseval-cifar10-cpu", "cifar10", "vgg16_half", epochs=10, n_eval=200, **{**CPU_RECIPE, "lr": 0.05},
    init="plain-cifar10-cpu", task={"name": "parseval", "beta": PARSEVAL_BETA, "conv_scaling": True},
    differs=(*_CPU_SIZE, *_FROM_PLAIN, "10 epochs (Parseval networks: 200 from scratch)",
             "convex aggregation not applied: VGG16 has no residual branches",
             "a 3x3 convolution's unfolded weight retracted as 3 W (1-Lipschitz by the paper's bound); MAD ran "
             "parsnet's TightFrame, which leaves convolutions unscaled", *CPU_RECIPE_DIFFERS),
    description="Parseval network: VGG16/2 with the orthonormality retraction (beta 0.0003) after every step, "
                "10 epochs from plain-cifar10-cpu (~16 min on 2 cores)"))
add_preset(Preset(
    "pcl-cifar10-cpu", "cifar10", "vgg16_half", epochs=10, n_eval=200, **{**CPU_RECIPE, "lr": 0.01},
    init="plain-cifar10-cpu", task={"name": "pcl", "layers": {"features": 256}, **PCL},
    differs=(*_CPU_SIZE, *_FROM_PLAIN, "10 epochs at peak lr 0.01 (the reference: 400 epochs at lr 0.01)",
             "one feature layer (the pooled 256-d features); the reference's ResNet-110 also uses an added 1024-d "
             "layer", *CPU_RECIPE_DIFFERS),
    description="PCL: VGG16/2 fine-tuned with cross-entropy + prototype conformity loss on its pooled features, no "
                "adversarial examples (~17 min on 2 cores)"))
add_preset(Preset(
    "pgdat-cifar10-cpu", "cifar10", "vgg16_half", epochs=8, n_eval=200, **{**CPU_RECIPE, "lr": 0.05},
    init="plain-cifar10-cpu", task={"name": "adversarial", "eps": PGD_AT["eps"], "steps": 3},
    differs=(*_CPU_SIZE, *_FROM_PLAIN, "PGD with 3 steps of 2.5 eps / 3 (Madry et al.: 7 steps of 2/255), "
             "8 epochs (Madry et al.: ~200 from scratch)", *CPU_RECIPE_DIFFERS),
    description="PGD adversarial training at eps 8/255 (Madry et al.), the reference row: VGG16/2 fine-tuned 8 "
                "epochs with 3-step PGD (~4x a clean epoch: ~50 min on 2 cores)"))
_DNCNN_CPU = {"width": 32, "depth": 10}
_DNCNN_DIFFERS = ("DnCNN with 10 layers of 32 channels (the paper: 17 x 64; ~1x the FLOPs of VGG16/2)",
                  "bfloat16 autocast and channels-last", "no lr decay (the reference: / 10 every 30 epochs)",
                  "batch 128 and no weight decay (the reference: batch 256, weight decay 1e-4)",
                  "classifier: plain-cifar10-cpu (VGG16/2)")
add_preset(DenoiserPreset(
    "dncnn-mse-cifar10-cpu", "cifar10", "dncnn", "plain-cifar10-cpu", SMOOTHING["sigma"], objective="mse",
    model_kwargs=_DNCNN_CPU, epochs=8, batch_size=128, precision="bf16", channels_last=True,
    differs=(*_DNCNN_DIFFERS, "8 epochs (the reference: 90)"),
    description="DnCNN denoiser for sigma 0.25 with the MSE objective, the start of the stability training "
                "(~1.5 min/epoch: ~12 min on 2 cores)"))
add_preset(DenoiserPreset(
    "dncnn-cifar10-cpu", "cifar10", "dncnn", "plain-cifar10-cpu", SMOOTHING["sigma"], objective="stability",
    model_kwargs=_DNCNN_CPU, init="dncnn-mse-cifar10-cpu", epochs=8, batch_size=128, precision="bf16",
    channels_last=True, differs=(*_DNCNN_DIFFERS, "8 epochs from the MSE denoiser (the reference: 90)"),
    description="Denoised Smoothing's denoiser: the MSE DnCNN fine-tuned through the frozen plain-cifar10-cpu with "
                "the stability objective (~3.5 min/epoch: ~28 min on 2 cores)"))
# Full-size presets for GPU users: the papers' settings (cosine instead of step schedules).
_FULL = {**CPU_RECIPE, "precision": "fp32", "channels_last": False, "schedule": "cosine", "warmup": 0.25}
add_preset(Preset("parseval-cifar10-paper", "cifar10", "vgg16", epochs=200, n_eval=10000, **_FULL,
                  task={"name": "parseval", "beta": PARSEVAL_BETA, "conv_scaling": True},
                  description="Parseval VGG16 on CIFAR-10 from scratch, 200 epochs, beta 0.0003 (GPU)"))
add_preset(Preset("pcl-cifar10-paper", "cifar10", "vgg16", epochs=400, n_eval=10000, **{**_FULL, "lr": 0.01,
                                                                                          "label_smoothing": 0.0},
                  init="plain-cifar10-paper", task={"name": "pcl", "layers": {"features": 512}, **PCL},
                  description="PCL VGG16: plain-cifar10-paper fine-tuned 400 epochs at lr 0.01 (GPU)"))
add_preset(Preset("pgdat-cifar10-paper", "cifar10", "vgg16", epochs=200, n_eval=10000, **_FULL,
                  task={"name": "adversarial", **PGD_AT},
                  description="PGD-AT VGG16 (Madry et al.: eps 8/255, 7 steps of 2/255), 200 epochs (GPU)"))
add_preset(DenoiserPreset("dncnn-mse-cifar10-paper", "cifar10", "dncnn", "plain-cifar10-paper", SMOOTHING["sigma"],
                          objective="mse", epochs=90, weight_decay=1e-4, schedule="cosine",
                          description="DnCNN 17 x 64, MSE objective, 90 epochs of Adam (Salman et al.; GPU)"))
add_preset(DenoiserPreset("dncnn-cifar10-paper", "cifar10", "dncnn", "plain-cifar10-paper", SMOOTHING["sigma"],
                          init="dncnn-mse-cifar10-paper", epochs=90, weight_decay=1e-4, schedule="cosine",
                          description="DnCNN 17 x 64, stability objective from the MSE denoiser, 90 epochs (GPU)"))
# The digits stand-ins of the baselines (tests and --quick): seconds each.
add_preset(Preset("plain-digits-short", "digits", "digits_cnn", epochs=3, batch_size=64, n_eval=360,
                  description="digits CNN without masking, 3 epochs: the base of the baselines' digits stand-ins"))
add_preset(Preset("parseval-digits", "digits", "digits_cnn", epochs=3, batch_size=64, n_eval=360,
                  init="plain-digits-short",
                  task={"name": "parseval", "beta": 0.01, "conv_scaling": True},
                  description="Parseval digits CNN (tests)"))
add_preset(Preset("pcl-digits", "digits", "digits_cnn", epochs=3, batch_size=64, n_eval=360,
                  init="plain-digits-short",
                  task={"name": "pcl", "layers": {"classifier.2": 128}, **PCL}, description="PCL digits CNN (tests)"))
add_preset(Preset("pgdat-digits", "digits", "digits_cnn", epochs=3, batch_size=64, n_eval=360,
                  init="plain-digits-short",
                  task={"name": "adversarial", "eps": 0.1, "steps": 3}, description="PGD-AT digits CNN (tests)"))
add_preset(DenoiserPreset("dncnn-digits", "digits", "dncnn", "plain-digits-short", 0.25,
                          model_kwargs={"width": 8, "depth": 3},
                          epochs=2, batch_size=64, lr=1e-2, description="DnCNN for the digits (tests)"))
