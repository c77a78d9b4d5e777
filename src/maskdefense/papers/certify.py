"""Certified patch robustness: the published numbers of derandomized smoothing (Levine and Feizi, NeurIPS
2020) and PatchCleanser (Xiang, Mahloujifar, Mittal, USENIX Security 2022), and the presets of the base
classifiers trained on each certifier's ablated or masked inputs, as data. Nothing here runs anything;
:mod:`maskdefense.experiments.certify` reads it.

Where each number comes from (nothing is quoted that was not read):

* Derandomized smoothing, CIFAR-10: the paper's abstract -- "for a 5x5 patch attack on CIFAR-10, our method
  achieves up to around 57.6% certified accuracy (with a classifier with around 83.8% clean accuracy)";
  column smoothing, the reference code's released CIFAR-10 checkpoint is a ResNet-18 trained on bands of
  4 columns for 350 epochs (alevine0/patchSmoothing, ``checkpoints/cifar_one_band_..._band_4_epoch_349...``),
  certified with ``--threshhold 0.2`` by default. The paper's Table 1 (per band size and threshold) was not
  reachable from this machine.
* PatchCleanser: ImageNet with ViT-B16-224, 2%-pixel patch (32 px of 224), k = 6 masks per axis, Cutout
  training: 83.9% clean, 62.1% certified (the abstract; ``misc/reproducibility.md`` of inspire-group/PatchCleanser
  gives the same output). Its CIFAR-10 setting (the reference's commands): images resized to 224x224, patches
  of 35 px (2.4% of the pixels, a 5x5 patch on 32x32) and 14 px (0.4%, 2x2 on 32x32), k = 6, models ResNetV2-50x1
  (BiT, distilled), ResMLP-S24 (distilled) and ViT-B16-224 fine-tuned 10 epochs with Cutout (2 holes of 128 px).
  Its CIFAR-10 values (the paper's Table 2) were not reachable here: they are ``None`` and the tables say so.

Model sizes: ResNet-18 (CIFAR variant) 11.2M parameters; ResNetV2-50x1 25.5M; ResMLP-S24 30M; ViT-B16 86M.
The CPU presets below fine-tune the project's VGG16 at width 1/2 (CIFAR-10) and LeNet-5 (MNIST).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..training.presets import CPU_RECIPE, CPU_RECIPE_DIFFERS, Preset, add_preset


@dataclass(frozen=True)
class Published:
    """One published certified-accuracy number (fractions; ``None`` = not read from the source)."""

    method: str
    dataset: str
    model: str
    parameters_m: float
    setting: str
    patch: str
    clean: float | None
    certified: float | None
    source: str


PUBLISHED: tuple[Published, ...] = (
    Published("Derandomized smoothing (column)", "cifar10", "ResNet-18", 11.2,
              "the abstract's best setting, band and threshold not stated there (the released model: bands of 4 "
              "columns; the certify script's default threshold 0.2)", "5x5 (2.4%)", 0.838, 0.576,
              "abstract ('up to around'); model and band from the reference code's checkpoint"),
    Published("PatchCleanser", "cifar10", "ResNetV2-50x1 (BiT)", 25.5, "k = 6, Cutout 2x128 px, 224x224 input",
              "35 px of 224 (2.4%)", None, None, "setting from the reference code; values not read (Table 2)"),
    Published("PatchCleanser", "cifar10", "ViT-B16-224", 86.0, "k = 6, Cutout 2x128 px, 224x224 input",
              "35 px of 224 (2.4%)", None, None, "setting from the reference code; values not read (Table 2)"),
    Published("PatchCleanser", "imagenet", "ViT-B16-224", 86.0, "k = 6, Cutout 2x128 px", "32 px of 224 (2%)",
              0.839, 0.621, "abstract; misc/reproducibility.md of the reference code"),
)


def published(dataset: str) -> list[Published]:
    return [p for p in PUBLISHED if p.dataset == dataset]


#: Derandomized smoothing's settings: band width (column smoothing) and block side per data set. Column
#: band 4 on CIFAR-10 is the reference's released model; band 2 on MNIST its released MNIST model
#: (``mnist_one_band_..._band_2``); the block sides are ours (no released block model).
DS_BAND = {"cifar10": 4, "mnist": 2, "digits": 2}
DS_BLOCK = {"cifar10": 12, "mnist": 10, "digits": 4}
DS_THRESHOLD = 0.2
#: PatchCleanser: masks per axis (the paper's k = 6) and the Cutout hole, scaled from 128 of 224 pixels.
PC_K = {"cifar10": 6, "mnist": 6, "digits": 3}
PC_CUTOUT = {"cifar10": 18, "mnist": 16, "digits": 4}
#: The grid certificate: MAD's cells (8 on 32x32 at training, 7 on 28x28) at MAD's rate 3/4 (certifies no
#: patch of 2+ pixels, see certify.grid) and at 7/8 (the smallest rate that can certify 4-cell patches).
GRID_CELL = {"cifar10": 8, "mnist": 7, "digits": 2}
GRID_RATES = (0.75, 0.875)

_CIFAR_TUNE = {**CPU_RECIPE, "lr": 0.05}
_CIFAR_DIFFERS = ("VGG16 at width 1/2 (the papers: ResNet-18, ResNetV2-50x1, ViT-B16)",
                  "fine-tunes plain-cifar10-cpu for 12 epochs (peak lr 0.05) on the ablated inputs", *CPU_RECIPE_DIFFERS)
_MNIST_DIFFERS = ("LeNet-5", "fine-tunes plain-mnist-cpu for 6 epochs on the ablated inputs")


def _presets() -> None:
    for ds, model, init, epochs, extra, differs in (
            ("cifar10", "vgg16_half", "plain-cifar10-cpu", 12, _CIFAR_TUNE, _CIFAR_DIFFERS),
            ("mnist", "lenet5", "plain-mnist-cpu", 6, {}, _MNIST_DIFFERS)):
        common = dict(dataset=ds, model=model, epochs=epochs, init=init, n_eval=500, **extra)
        add_preset(Preset(f"ds-column-{ds}-cpu", ablation={"transform": "band_ablation", "band": DS_BAND[ds]},
                          differs=(*differs, "removed pixels black (the reference: a 6-channel encoding)"),
                          description=f"derandomized smoothing's base classifier for {ds}: trained on one random "
                                      f"band of {DS_BAND[ds]} columns per image", **common))
        add_preset(Preset(f"ds-block-{ds}-cpu", ablation={"transform": "block_ablation", "block": DS_BLOCK[ds]},
                          differs=(*differs, f"block side {DS_BLOCK[ds]} (ours)"),
                          description=f"derandomized smoothing's block base classifier for {ds}: one random "
                                      f"{DS_BLOCK[ds]}x{DS_BLOCK[ds]} block kept per image", **common))
        add_preset(Preset(f"pc-{ds}-cpu", ablation={"transform": "cutout", "length": PC_CUTOUT[ds], "holes": 2},
                          differs=(*differs, f"Cutout holes of {PC_CUTOUT[ds]} px (the paper's 128 of 224, scaled)"),
                          description=f"PatchCleanser's base classifier for {ds}: Cutout training, 2 holes",
                          **common))
        add_preset(Preset(f"grid-{ds}-cpu", ablation={"transform": "grid_mask", "cell": GRID_CELL[ds],
                                                      "rate": GRID_RATES[1], "exact": True},
                          differs=(*differs, "grid masks at rate 7/8, exactly 14 of 16 cells removed (MAD: 3/4, "
                                             "Bernoulli)"),
                          description=f"the grid certificate's base classifier for {ds}: MAD's cells, 14 of 16 "
                                      "removed", **common))


_presets()
