"""Model zoo: one registry, every model takes images in [0, 1] and normalizes inside.

>>> from maskdefense.models import create_model, list_models
>>> m = create_model("lenet5")                # MNIST LeNet-5 as in MAD
>>> m = create_model("vgg16", width=0.25)     # CIFAR VGG16 at 1/4 width (== "vgg16_narrow")
>>> list_models("vgg*")

Every model built by the registry carries ``model.spec``: the registered name and the keyword arguments it
was built with, which is what a checkpoint stores so it can rebuild the same architecture
(:mod:`.registry`). The built-in classifiers are in :mod:`.classifiers` (built from the blocks of
:mod:`.blocks` where shared, e.g. the feature-denoising block), the image-to-image networks (reformers,
denoisers, inpainters) in :mod:`.autoencoders`, the mask generators in :mod:`.masker`, the part segmenters in
:mod:`.segmenters`.
"""

from __future__ import annotations

from ..registry import UnknownNameError
from .autoencoders import ConvAutoencoder, DnCNN, REDNet
from .blocks import DENOISE_MODES, NonLocalDenoise
from .classifiers import (CIFAR_MEAN, CIFAR_STD, VGG, BasicBlock, Bottleneck, DigitsCNN, ImageClassifier, LeNet5,
                          Normalize, ResNet)
from .masker import AttentionUNetMasker, apply_masker
from .registry import MODELS, ModelRegistry, create_model, list_models, register
from .segmenters import PartUNet

__all__ = [
    "MODELS", "ModelRegistry", "create_model", "list_models", "register", "Normalize", "ImageClassifier",
    "LeNet5", "DigitsCNN", "VGG", "ResNet", "BasicBlock", "Bottleneck", "CIFAR_MEAN", "CIFAR_STD",
    "UnknownNameError", "REDNet", "ConvAutoencoder", "DnCNN", "AttentionUNetMasker", "apply_masker", "NonLocalDenoise",
    "DENOISE_MODES", "PartUNet",
]
