"""The image classifiers of the zoo: LeNet-5 (MNIST), a small CNN (8x8 digits), VGG (CIFAR variant) and
ResNet-18/50/101 (CIFAR or ImageNet stem, width multiplier, optional feature-denoising blocks after chosen
stages). Every one takes images in [0, 1] of shape (N, C, H, W) and normalizes inside (:class:`Normalize`,
buffers saved with the weights); each registers itself in :data:`~maskdefense.models.registry.MODELS`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..validation import check_images
from .blocks import NonLocalDenoise
from .registry import MODELS

__all__ = ["Normalize", "ImageClassifier", "LeNet5", "DigitsCNN", "VGG", "ResNet", "BasicBlock", "Bottleneck",
           "CIFAR_MEAN", "CIFAR_STD"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std as buffers (saved in checkpoints)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """Base class: ``normalize -> features -> classifier``; knows its input spec."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = input_size
        self.num_classes = num_classes
        mean = mean if mean is not None else [0.5] * in_channels
        std = std if std is not None else [0.5] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.normalize = Normalize(mean, std)
        self.spec: dict[str, Any] = {}  # set by the registry (MODELS.create): name and kwargs

    def check_input(self, x: Tensor) -> Tensor:
        """Full input validation (shape, dtype, range, NaN); public entry points call it."""
        return check_images(x, channels=self.in_channels, size=self.input_size)

    def forward(self, x: Tensor) -> Tensor:
        # Cheap structural check on every call (a full range/NaN check would cost a sync per batch;
        # the CLI, trainer and harness call check_input on data once).
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            check_images(x, channels=self.in_channels, size=self.input_size)
        return self.classify(self.normalize(x))

    def classify(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LeNet5(ImageClassifier):
    """LeNet-5 for 28x28 MNIST (ReLU and max pooling; 6-16 conv channels, 120-84 fully connected)."""

    def __init__(self, in_channels: int = 1, input_size: int = 28, num_classes: int = 10,
                 mean: Sequence[float] | None = (0.1307,), std: Sequence[float] | None = (0.3081,)) -> None:
        super().__init__(in_channels, input_size, num_classes, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((input_size // 2) - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
        )

    def classify(self, z: Tensor) -> Tensor:
        return self.classifier(self.features(z))


class DigitsCNN(ImageClassifier):
    """A small CNN for scikit-learn's 8x8 digits (two 3x3 conv layers, one pooling, one hidden layer)."""

    def __init__(self, in_channels: int = 1, input_size: int = 8, num_classes: int = 10,
                 mean: Sequence[float] | None = (0.3,), std: Sequence[float] | None = (0.4,),
                 width: int = 32) -> None:
        super().__init__(in_channels, input_size, num_classes, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = input_size // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * side * side, 128), nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def classify(self, z: Tensor) -> Tensor:
        return self.classifier(self.features(z))


_VGG_CFG: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _scaled(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class VGG(ImageClassifier):
    """VGG for 32x32 inputs (the common CIFAR variant: conv-BN-ReLU blocks, one linear classifier).

    ``width`` multiplies every channel count: 1.0 is the paper's VGG16 (~15M parameters), 0.25 the
    CPU preset.
    """

    def __init__(self, depth: str = "vgg16", in_channels: int = 3, input_size: int = 32,
                 num_classes: int = 10, width: float = 1.0,
                 mean: Sequence[float] | None = CIFAR_MEAN, std: Sequence[float] | None = CIFAR_STD) -> None:
        super().__init__(in_channels, input_size, num_classes, mean, std)
        if depth not in _VGG_CFG:
            raise ValueError(f"unknown VGG depth {depth!r}; known: {sorted(_VGG_CFG)}")
        if input_size % 32:
            raise ValueError(f"VGG needs an input side divisible by 32, got {input_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG_CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = _scaled(int(v), width)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, num_classes))

    def classify(self, z: Tensor) -> Tensor:
        return self.classifier(self.features(z))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (ResNet-18/34); ``planes`` output channels."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 convolutions with batch norm and a shortcut (ResNet-50/101); ``4 * planes`` output
    channels, the stride on the 3x3 convolution (as torchvision and Xie et al.'s code)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(ImageClassifier):
    """ResNet: a stem, stages of ``blocks[i]`` residual blocks with ``64 * 2**i * width`` planes (stride 2
    at the start of every stage but the first), global average pooling, one linear layer.

    block : ``"basic"`` (ResNet-18: ``blocks=(2, 2, 2, 2)``) or ``"bottleneck"`` (ResNet-50: ``(3, 4, 6, 3)``,
        ResNet-101: ``(3, 4, 23, 3)``).
    stem : ``"cifar"`` (one 3x3 convolution, stride 1, no pooling: the common CIFAR variant) or
        ``"imagenet"`` (7x7 convolution with stride 2 and 3x3 max pooling with stride 2, as torchvision's).
    denoise_after : stages (1-based) followed by a feature-denoising block
        (:class:`~maskdefense.models.blocks.NonLocalDenoise`): ``(3,)`` one block after stage 3,
        ``(1, 2, 3, 4)`` one after every stage (Xie et al.'s "ResNet Denoise"). Each block starts as the
        identity. Without blocks the state-dict keys are those of the plain ResNet (``stem.*``, ``layers.*``,
        ``head.*``); the blocks add ``denoise.<stage>.*``.
    denoise_mode : the blocks' denoising operation (one of :data:`~maskdefense.models.blocks.DENOISE_MODES`).
    """

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), in_channels: int = 3, input_size: int = 32,
                 num_classes: int = 10, width: float = 1.0,
                 mean: Sequence[float] | None = CIFAR_MEAN, std: Sequence[float] | None = CIFAR_STD,
                 block: str = "basic", stem: str = "cifar", denoise_after: Sequence[int] = (),
                 denoise_mode: str = "embedded_gaussian") -> None:
        super().__init__(in_channels, input_size, num_classes, mean, std)
        if block not in _BLOCKS:
            raise ValueError(f"unknown ResNet block {block!r}; known: {sorted(_BLOCKS)}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown ResNet stem {stem!r}; known: 'cifar', 'imagenet'")
        stages_after = sorted(set(int(s) for s in denoise_after))
        if any(s < 1 or s > len(blocks) for s in stages_after):
            raise ValueError(f"denoise_after names stages 1..{len(blocks)}, got {list(denoise_after)}")
        unit = _BLOCKS[block]
        c = _scaled(64, width)
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        units: list[nn.Module] = []
        denoise: dict[str, nn.Module] = {}
        self._denoise_at: dict[int, str] = {}  # index of a stage's last block -> its denoising block
        for i, n in enumerate(blocks):
            planes = _scaled(64 * 2**i, width)
            for j in range(n):
                units.append(unit(c, planes, stride=2 if (i > 0 and j == 0) else 1))
                c = planes * unit.expansion
            if i + 1 in stages_after:
                denoise[str(i + 1)] = NonLocalDenoise(c, denoise_mode)
                self._denoise_at[len(units) - 1] = str(i + 1)
        self.layers = nn.Sequential(*units)
        self.denoise = nn.ModuleDict(denoise)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def classify(self, z: Tensor) -> Tensor:
        z = self.stem(z)
        for i, unit in enumerate(self.layers):
            z = unit(z)
            if i in self._denoise_at:
                z = self.denoise[self._denoise_at[i]](z)
        return self.head(z)


MODELS.add("lenet5", LeNet5, "LeNet-5 for 28x28 grey images")
MODELS.add("digits_cnn", DigitsCNN, "small CNN for scikit-learn's 8x8 digits")
MODELS.add("vgg16", VGG, "VGG16, CIFAR 32x32 variant, full width (paper setting, GPU)", depth="vgg16", width=1.0)
MODELS.add("vgg16_narrow", VGG, "VGG16, CIFAR variant at width 1/4 (CPU preset)", depth="vgg16", width=0.25)
MODELS.add("vgg16_half", VGG, "VGG16, CIFAR variant at width 1/2 (CPU recipe preset)", depth="vgg16", width=0.5)
MODELS.add("vgg11_narrow", VGG, "VGG11, CIFAR variant at width 1/4 (fast surrogate)", depth="vgg11", width=0.25)
MODELS.add("resnet18", ResNet, "ResNet-18, CIFAR variant, full width (paper setting, GPU)", width=1.0)
MODELS.add("resnet18_narrow", ResNet, "ResNet-18, CIFAR variant at width 1/4 (CPU preset)", width=0.25)
MODELS.add("resnet18_half", ResNet, "ResNet-18, CIFAR variant at width 1/2 (CPU recipe preset)", width=0.5)
MODELS.add("resnet50", ResNet, "ResNet-50 (bottleneck blocks), CIFAR stem (stem='imagenet' for 7x7 + max pool)",
           blocks=(3, 4, 6, 3), block="bottleneck", width=1.0)
MODELS.add("resnet101", ResNet, "ResNet-101 (bottleneck blocks), CIFAR stem (stem='imagenet' for 7x7 + max pool)",
           blocks=(3, 4, 23, 3), block="bottleneck", width=1.0)
# Feature denoising (Xie et al. 2019): "denoiseK" = K embedded-Gaussian non-local blocks, 1 after stage 3 or 4
# after every stage.
for _name, _kw in (("resnet18", {}), ("resnet101", {"blocks": (3, 4, 23, 3), "block": "bottleneck"})):
    MODELS.add(f"{_name}_denoise1", ResNet, f"{_name} with one non-local denoising block after stage 3",
               width=1.0, denoise_after=(3,), **_kw)
    MODELS.add(f"{_name}_denoise4", ResNet, f"{_name} with a non-local denoising block after each of its 4 stages",
               width=1.0, denoise_after=(1, 2, 3, 4), **_kw)
