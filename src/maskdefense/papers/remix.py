"""REMIX (Chen, Chen, Yu; poster) and MagNet (Meng and Chen, CCS 2017), the defense it compares with: the
settings of the poster's Section IV and of MagNet's reference code, as presets and constants.

What the poster states (``../shared/papers/002_ffd6dcb89babc708.txt``): reformer and inpainter are the
simplified convolutional autoencoder with symmetric skip connections of Mao et al. (NIPS 2016), no sizes
given; n = 2 masks on MNIST and n = 3 on CIFAR-10, one mask-inpaint round; classifiers at 99% (MNIST) and 86%
(CIFAR-10); CW L2 and EAD (elastic-net rule, beta = 0.1) made against the classifier alone (oblivious), 1000
examples, confidence kappa in [0, 40] (MNIST) and [0, 100] (CIFAR-10). Figure 2 is a plot whose values the
text does not carry: only its qualitative claims can be compared (:data:`FIG2_CLAIMS`).

MagNet (Trevillie/MagNet, MNIST; the authors' later code for CIFAR-10): sigmoid convolutional autoencoders
(3x3, padding "same"), trained with MSE to remove Gaussian noise of volume 0.1 (MNIST) / 0.025 (CIFAR-10)
clipped to [0, 1], Adam lr 1e-3, batch 256, 100 (MNIST) / 400 (CIFAR-10) epochs; MNIST detectors:
reconstruction error with p = 2 (autoencoder I) and p = 1 (autoencoder II), each at a 0.1% false-positive
rate on 5000 validation images, reformer = autoencoder I; CIFAR-10: one autoencoder, reconstruction error
p = 1 and Jensen-Shannon detectors at T = 10 and 40 (0.5% per detector, the authors' later configuration).
"""

from __future__ import annotations

from dataclasses import replace

from ..training.presets import AutoencoderPreset, add_preset
from .mad import PLAIN_CIFAR10

#: The poster's settings.
N_MASKS = {"mnist": 2, "cifar10": 3}
K_ROUNDS = 1
KAPPAS = {"mnist": (0, 10, 20, 30, 40), "cifar10": (0, 20, 40, 60, 80, 100)}
EAD_BETA = 0.1
N_EXAMPLES = {"mnist": 1000, "cifar10": 1000}
CLASSIFIER_ACCURACY = {"mnist": 0.99, "cifar10": 0.86}
#: The classifiers on this CPU. Kappa is a margin in logits, so the classifier must have logits on the scale of
#: the poster's (MagNet's, trained with plain cross-entropy): the CPU recipe's label smoothing (0.1) caps the
#: margins (median clean margin 4.2 on plain-cifar10-cpu), and CW found no example even at kappa 10 on it (0/20
#: images); the CIFAR-10 classifier is therefore the recipe without label smoothing.
CLASSIFIER = {"mnist": "plain-mnist-cpu", "cifar10": "plain-cifar10-ce-cpu"}
add_preset(replace(
    PLAIN_CIFAR10, name="plain-cifar10-ce-cpu", label_smoothing=0.0,
    differs=tuple(d.replace("label smoothing 0.1", "no label smoothing (plain cross-entropy, as MagNet's "
                            "classifier: CW's confidence kappa is a logit margin, which label smoothing caps)")
                  for d in PLAIN_CIFAR10.differs),
    description="VGG16/2 for the REMIX/MagNet figures: plain-cifar10-cpu without label smoothing"))
#: Figure 2 of the poster, as far as its text allows: no values, these claims.
FIG2_CLAIMS = (
    "mask-inpaint (REMIX without reformer) outperforms MagNet's reformer at most confidence levels",
    "adding the reformer to mask-inpaint raises accuracy on high-confidence examples quite significantly",
    "the reformer alone mitigates low- and moderate-confidence examples but is misled by high-confidence ones",
)

#: MagNet's detector settings per dataset: name -> (autoencoder preset role, kind, p or temperature).
MAGNET_DETECTORS = {
    "mnist": {"I": ("I", "reconstruction", 2), "II": ("II", "reconstruction", 1)},
    "cifar10": {"I": ("I", "reconstruction", 1), "T10": ("I", "jensen-shannon", 10.0),
                "T40": ("I", "jensen-shannon", 40.0)},
}
#: False-positive rate per detector on clean validation images.
MAGNET_FPR = {"mnist": 0.001, "cifar10": 0.005}
#: The autoencoder MagNet reforms with.
MAGNET_REFORMER = {"mnist": "I", "cifar10": "I"}
#: The preset of MagNet's autoencoder ``role`` ("I", "II") for ``dataset`` on this CPU.
MAGNET_AE_NUMBER = {"I": 1, "II": 2}


def magnet_preset(role: str, dataset: str, size: str = "cpu") -> str:
    return f"magnet-ae{MAGNET_AE_NUMBER[role]}-{dataset}-{size}"


_MAGNET_MNIST_I = [3, "pool", 3, 3, "up", 3]  # encoder [3, avg, 3] mirrored, then the 1-channel output
_MAGNET_MNIST_II = [3, 3]
_MAGNET_CIFAR = [3, 3]

_NOISE = {"mnist": 0.1, "cifar10": 0.025}
#: channels-last doubles RED-Net's training speed on this CPU; bfloat16 autocast adds nothing (measured on the
#: CIFAR-10 inpainter's training step, 2 threads: 125 / 111 / 224 / 233 images/s for fp32 / bf16 / channels-last /
#: both, under load).
_CPU_AE = {"channels_last": True}
_CPU_EPOCHS = {"mnist": 5, "cifar10": 10}
#: MagNet's MNIST autoencoders train at ~8 s per epoch here: the reference's 100 epochs (after 30, autoencoder I
#: still reconstructed worse than the noisy input it was given: validation MSE 0.015 against 0.0054).

for _ds, _role, _layers, _cpu_epochs, _full_epochs in (
        ("mnist", "I", _MAGNET_MNIST_I, 100, 100), ("mnist", "II", _MAGNET_MNIST_II, 100, 100),
        ("cifar10", "I", _MAGNET_CIFAR, 60, 400)):
    _common = dict(dataset=_ds, model="conv_ae", model_kwargs={"layers": _layers},
                   corrupt={"transform": "gaussian_noise", "sigma": _NOISE[_ds]}, loss="mse", batch_size=256, lr=1e-3)
    add_preset(AutoencoderPreset(
        magnet_preset(_role, _ds, "paper"), epochs=_full_epochs, **_common,
        description=f"MagNet autoencoder {_role} for {_ds} as in the reference code ({_full_epochs} epochs)"))
    add_preset(AutoencoderPreset(
        magnet_preset(_role, _ds), epochs=_cpu_epochs, **_common,
        differs=(*((f"{_cpu_epochs} epochs instead of {_full_epochs}",) if _cpu_epochs != _full_epochs else ()),
                 "fresh noise every epoch (the reference draws it once before training)"),
        description=f"MagNet autoencoder {_role} for {_ds}, CPU-sized"))

# REMIX's reformer and inpainter: the simplified RED-Net. The poster gives no sizes or noise: Mao et al.'s
# restoration network (width 64, 10 layers) for the full presets; the reformer's noise is MagNet's.
_REDNET_FULL = {"width": 64, "depth": 5}
_REDNET_CPU = {"width": 16, "depth": 4}
for _ds in ("mnist", "cifar10"):
    _n = N_MASKS[_ds]
    for _role, _corrupt, _what in (
            ("reformer", {"transform": "gaussian_noise", "sigma": _NOISE[_ds]},
             f"denoising reformer (Gaussian noise {_NOISE[_ds]}, MagNet's)"),
            ("inpainter", {"transform": "partition_mask", "n": _n},
             f"inpainter of images with 1/{_n} of their pixels removed by a random partition")):
        add_preset(AutoencoderPreset(
            f"remix-{_role}-{_ds}-paper", _ds, "rednet", _corrupt, model_kwargs=_REDNET_FULL, epochs=50,
            description=f"REMIX {_what} for {_ds}: RED-Net width 64, 10 layers (sizes not in the poster: Mao et al.'s)"))
        add_preset(AutoencoderPreset(
            f"remix-{_role}-{_ds}-cpu", _ds, "rednet", _corrupt, model_kwargs=_REDNET_CPU,
            epochs=_CPU_EPOCHS[_ds], **_CPU_AE,
            differs=("RED-Net width 16, 8 layers (full preset: width 64, 10 layers)",
                     f"{_CPU_EPOCHS[_ds]} epochs (full preset: 50)"),
            description=f"REMIX {_what} for {_ds}, CPU-sized"))

#: The sweep of masks n and rounds k (clean and defended accuracy; beyond the poster, which fixes n and k = 1):
#: an inpainter is trained for every n (it learns to fill 1/n of the pixels; ~6.5 min per CIFAR-10 inpainter here).
SWEEP_N = {"mnist": (2, 3, 4), "cifar10": (2, 3, 4)}
SWEEP_K = (1, 2, 3)
for _ds, _ns in SWEEP_N.items():
    for _n in _ns:
        if _n != N_MASKS[_ds]:
            add_preset(AutoencoderPreset(
                f"remix-inpainter-n{_n}-{_ds}-cpu", _ds, "rednet", {"transform": "partition_mask", "n": _n},
                model_kwargs=_REDNET_CPU, epochs=_CPU_EPOCHS[_ds], **_CPU_AE,
                differs=("RED-Net width 16, 8 layers", f"{_CPU_EPOCHS[_ds]} epochs",
                         f"n = {_n} (the poster: n = {N_MASKS[_ds]} on {_ds})"),
                description=f"REMIX inpainter for {_ds} with n = {_n} masks (the n sweep), CPU-sized"))
