"""Named experiment presets: the paper's full-size settings (for GPU users) and the CPU-sized ones this
project runs, each saying how it differs from the paper.

``PRESETS["mad-cifar10-paper"]`` is MAD's VGG16/CIFAR-10 setting; ``PRESETS["mad-cifar10-cpu"]`` is what
fits a 2-core CPU, and its ``differs`` field lists every difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "none"
    weight_decay: float = 0.0
    train_cell: int | None = None  # None: no masking at training
    train_rate: float = 0.75
    test_cell: int | None = None
    test_rate: float = 0.75
    votes: int = 5
    n_eval: int = 1000
    differs: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_config(self, seed: int = 0) -> Any:
        """The :class:`~maskdefense.train.TrainConfig` of this preset."""
        from .train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           schedule=self.schedule, weight_decay=self.weight_decay, seed=seed)

    def transform(self) -> Any:
        """MAD's training transform (``GridMask``) of this preset, or ``None`` when it trains unmasked."""
        if self.train_cell is None:
            return None
        from .masking import GridMask

        return GridMask(self.train_cell, self.train_rate)


PRESETS: Registry[Preset] = Registry("preset")


def _add(p: Preset) -> None:
    PRESETS.add(p.name, lambda **kw: Preset(**{**asdict(p), **kw}), p.description)


# MAD (journal version, Algorithms 2022): Adam lr 1e-3, 5 votes; MNIST 7x7 cells train and test;
# CIFAR-10/SVHN 8x8 cells at training, 4x4 at test, rate 3/4. The paper does not give epochs or batch size.
_add(Preset("mad-mnist-paper", "mnist", "lenet5", epochs=20, train_cell=7, test_cell=7, n_eval=10000,
            description="MAD LeNet/MNIST as in the paper (epochs and batch size are not given there; ours)"))
_add(Preset("mad-mnist-cpu", "mnist", "lenet5", epochs=12, train_cell=7, test_cell=7, n_eval=1000,
            differs=("12 epochs (paper: not stated)", "attacks evaluated on 1000 correctly classified test images"),
            description="MAD LeNet/MNIST on CPU: same model and masking as the paper"))
_add(Preset("mad-mnist-cell4-cpu", "mnist", "lenet5", epochs=12, train_cell=4, test_cell=4, n_eval=1000,
            differs=("4x4-pixel cells (a 7x7 grid of cells): the other reading of the paper's '7x7 grids'",),
            description="MAD LeNet/MNIST with 4x4-pixel cells (sensitivity check of the cell-size reading)"))
_add(Preset("plain-mnist-cpu", "mnist", "lenet5", epochs=12, n_eval=1000,
            description="LeNet/MNIST without masking, same budget as mad-mnist-cpu"))
_add(Preset("mad-cifar10-paper", "cifar10", "vgg16", epochs=100, train_cell=8, test_cell=4, n_eval=10000,
            description="MAD VGG16/CIFAR-10 as in the paper (full width; epochs not stated there)"))
_add(Preset("mad-cifar10-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, train_cell=8, test_cell=4,
            n_eval=300,
            differs=("VGG16 at width 1/4 (1/16 of the FLOPs)", "20 epochs (paper: not stated)",
                     "300 test images for gray-box and transfer attacks, the first 50 for the adaptive threat",
                     "Carlini-Wagner with fewer steps (library default 9x10000 is out of reach)"),
            description="MAD VGG16/CIFAR-10 sized for a 2-core CPU"))
# Table 1 (mask-rate sweep; rate used at training and test) and Table 3 (train/test cell sizes) of the paper,
# CPU-sized like mad-cifar10-cpu. Rate 0 is plain-cifar10-cpu; rate 3/4 with 8x8 training cells is mad-cifar10-cpu.
for _num, _den in ((1, 3), (1, 2), (4, 5)):
    _add(Preset(f"mad-cifar10-rate{_num}_{_den}-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, train_cell=8,
                train_rate=_num / _den, test_cell=4, test_rate=_num / _den, n_eval=100,
                differs=("VGG16 at width 1/4", "20 epochs", "100 test images for attacks", "gray-box attacks only"),
                description=f"MAD Table 1 column {_num}/{_den}: mad-cifar10-cpu with mask rate {_num}/{_den}"))
_add(Preset("mad-cifar10-train4-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, train_cell=4, test_cell=4,
            n_eval=100, differs=("VGG16 at width 1/4", "20 epochs", "100 test images for attacks", "gray-box attacks only"),
            description="MAD Table 3 columns 'training 4x4': mad-cifar10-cpu trained with 4x4 cells"))
_add(Preset("plain-cifar10-cpu", "cifar10", "vgg16_narrow", epochs=20, batch_size=128, n_eval=500,
            description="VGG16 width 1/4 on CIFAR-10 without masking, same budget as mad-cifar10-cpu"))
_add(Preset("mad-svhn-paper", "svhn", "resnet18", epochs=30, train_cell=8, test_cell=4, n_eval=10000,
            description="MAD ResNet18/SVHN as in the paper"))
_add(Preset("mad-svhn-cpu", "svhn", "resnet18_narrow", epochs=8, train_cell=8, test_cell=4, n_eval=300,
            differs=("ResNet18 at width 1/4", "8 epochs (paper: not stated)",
                     "300 test images for gray-box and transfer attacks, the first 50 for the adaptive threat",
                     "Carlini-Wagner with fewer steps (library default 9x10000 is out of reach)"),
            description="MAD ResNet18/SVHN sized for a 2-core CPU"))
_add(Preset("plain-svhn-cpu", "svhn", "resnet18_narrow", epochs=8, n_eval=300,
            description="ResNet18 width 1/4 on SVHN without masking, same budget as mad-svhn-cpu (transfer surrogate)"))
# The embedded default (scikit-learn digits, 8x8): 2x2 cells (16 cells), rate 1/2.
_add(Preset("mad-digits", "digits", "digits_cnn", epochs=30, batch_size=64, train_cell=2, train_rate=0.5,
            test_cell=2, test_rate=0.5, votes=9, n_eval=360,
            description="MAD on the embedded 8x8 digits (demo and tests): 2x2 cells, rate 1/2"))
_add(Preset("plain-digits", "digits", "digits_cnn", epochs=30, batch_size=64, n_eval=360,
            description="digits CNN without masking"))

DEFAULT_MODEL = {"digits": "digits_cnn", "mnist": "lenet5", "cifar10": "vgg16_narrow", "svhn": "resnet18_narrow"}


def create_preset(name: str, **overrides: Any) -> Preset:
    return PRESETS.create(name, **overrides)


def list_presets(pattern: str = "*") -> list[str]:
    return PRESETS.list(pattern)
