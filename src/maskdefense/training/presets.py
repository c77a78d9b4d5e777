"""Named training presets: the papers' full-size settings (for GPU users) and the CPU-sized ones this
project runs, each saying how it differs from the paper (its ``differs`` field).

The presets live with their paper (:mod:`maskdefense.papers`) and are registered with :func:`add_preset`
when the plugin group ``maskdefense.plugins`` is loaded (lazily, at the first lookup).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..registry import PAPERS, Registry
from .config import TrainConfig


@dataclass(frozen=True, kw_only=True)
class _Trains:
    """What every preset shares: the :class:`~maskdefense.training.config.TrainConfig` settings it trains with
    (keyword-only; a kind of preset may change a default), how it differs from its paper, a description, its
    record, and its training configuration."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "none"
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup: float = 0.25
    label_smoothing: float = 0.0
    weight_decay_norm: bool = True
    crop_padding: int = 0
    hflip: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    differs: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_config(self, seed: int = 0) -> Any:
        """The :class:`~maskdefense.training.config.TrainConfig` of this preset, trained with ``seed`` plus the
        preset's ``seed_offset`` (a classifier preset's; 0 for the others)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig) if hasattr(self, f.name)},
                           seed=seed + getattr(self, "seed_offset", 0))


@dataclass(frozen=True)
class Preset(_Trains):
    """A classifier: ``model`` (with ``model_kwargs``) trained on ``dataset``; ``task`` how
    (:func:`~maskdefense.training.tasks.make_task`: adversarial training, Parseval, PCL; ``None``:
    cross-entropy); MAD's grid masking at training (``train_cell``, ``train_rate``) and test (``test_cell``,
    ``test_rate``, ``votes``), or a certifier's ``ablation``; ``init`` fine-tunes the trained model of another
    preset (same seed); ``seed_offset`` trains an independent twin (a transfer surrogate)."""

    name: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None  # a preset whose trained model (same seed) training starts from: fine-tuning
    seed_offset: int = 0  # added to the seed a model is trained with: an independently trained twin (surrogate)
    task: dict[str, Any] | None = None  # how it trains (training.tasks.make_task); None: cross-entropy
    train_cell: int | None = None  # None: no masking at training
    train_rate: float = 0.75
    test_cell: int | None = None
    test_rate: float = 0.75
    votes: int = 5
    n_eval: int = 1000
    ablation: dict[str, Any] | None = None  # another training transform, as ops.ablation.make_transform reads it

    def __post_init__(self) -> None:
        if self.ablation is not None and self.train_cell is not None:
            raise ValueError(f"preset {self.name}: give train_cell (grid masking) or ablation, not both")

    def transform(self) -> Any:
        """The training transform of this preset: ``ablation`` (a certifier's ablation, e.g.
        ``{"transform": "band_ablation", "band": 4}``), MAD's ``GridMask`` (``train_cell``), or ``None`` when
        it trains on clean images."""
        if self.ablation is not None:
            from ..ops.ablation import make_transform

            return make_transform(self.ablation)
        if self.train_cell is None:
            return None
        from ..ops.masking import GridMask

        return GridMask(self.train_cell, self.train_rate)


@dataclass(frozen=True)
class AutoencoderPreset(_Trains):
    """An image-to-image network (reformer, denoiser, inpainter) trained to restore clean images from
    corrupted ones: ``corrupt`` names the corruption (``{"transform": "gaussian_noise", "sigma": 0.1}`` or
    ``{"transform": "partition_mask", "n": 3}``), ``loss`` the reconstruction loss (``"mse"``, ``"l1"``)."""

    name: str
    dataset: str
    model: str
    corrupt: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str = "mse"
    batch_size: int = field(default=256, kw_only=True)

    def corruption(self) -> Any:
        """The training corruption: :class:`~maskdefense.training.transforms.GaussianNoise` (clipped to
        [0, 1]) or :class:`~maskdefense.ops.partition.PartitionMask`."""
        kind = self.corrupt.get("transform")
        if kind == "gaussian_noise":
            from .transforms import GaussianNoise

            return GaussianNoise(float(self.corrupt["sigma"]), clip=bool(self.corrupt.get("clip", True)))
        if kind == "partition_mask":
            from ..ops.partition import PartitionMask

            return PartitionMask(int(self.corrupt["n"]))
        raise ValueError(f"preset {self.name}: unknown corruption {self.corrupt!r}")


@dataclass(frozen=True)
class SFMPreset(_Trains):
    """A mask generator trained in alternation with its classifier (SFM-Defense's Algorithm 1:
    :class:`~maskdefense.training.tasks.SparseMaskTask`, launched by
    :func:`~maskdefense.training.loop.train_sfm_on_dataset`). ``classifier`` (with ``classifier_kwargs``)
    starts from the model of preset ``init`` (the target model's pre-training; ``None``: from scratch);
    ``masker`` (with ``masker_kwargs``) is the mask generator; ``weights`` are ``(w1, w2, w3)`` of the loss;
    ``preprocess`` names the preprocessing ``T`` as ``{"name": <squeezer>, **options}`` (``None``: the
    identity); ``classifier_input`` is ``"preprocessed"`` (Algorithm 1) or ``"pipeline"``; ``norm_group``: images
    per L1 and L2 norm of the loss (1: per image; :mod:`maskdefense.training.tasks.sfm`)."""

    name: str
    dataset: str
    classifier: str
    weights: tuple[float, float, float]
    classifier_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    masker: str = "attention_unet"
    masker_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None
    classifier_input: str = "preprocessed"
    norm_group: int = 1
    n_eval: int = 1000
    epochs: int = field(default=50, kw_only=True)
    optimizer: str = field(default="sgd", kw_only=True)
    lr: float = field(default=0.01, kw_only=True)

    def preprocessor(self) -> Any:
        """The preprocessing ``T`` (:func:`maskdefense.ops.squeeze.create_squeezer`), or ``None``."""
        if self.preprocess is None:
            return None
        from ..ops.squeeze import create_squeezer

        options = dict(self.preprocess)
        return create_squeezer(options.pop("name"), **options)


@dataclass(frozen=True)
class PartPreset(_Trains):
    """A network trained on part-annotated images (:func:`maskdefense.data.part_dataset` of ``data``, launched
    by :func:`~maskdefense.training.loop.train_on_part_data`): ``task="segment"`` a part extractor (per-pixel
    cross-entropy over the background and the parts; ``area_threshold`` is the part-set rule of its metrics),
    ``task="classify"`` a classifier of the images. ``hflip`` and ``crop_padding`` move a part map with its
    image."""

    name: str
    task: str
    data: dict[str, Any]
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    area_threshold: float = 0.01

    def __post_init__(self) -> None:
        if self.task not in ("segment", "classify"):
            raise ValueError(f"preset {self.name}: task must be 'segment' or 'classify', got {self.task!r}")


@dataclass(frozen=True)
class DenoiserPreset(_Trains):
    """A denoiser trained in front of a frozen classifier on Gaussian noise of standard deviation ``sigma``
    (Denoised Smoothing: :class:`~maskdefense.training.tasks.DenoiserTask`, launched by
    :func:`~maskdefense.training.loop.train_denoiser_on_dataset`): ``classifier`` names the classifier's preset
    (same seed), ``objective`` is ``"stability"`` or ``"mse"``, ``init`` a denoiser preset whose trained denoiser
    training starts from (``None``: from scratch)."""

    name: str
    dataset: str
    model: str
    classifier: str
    sigma: float
    objective: str = "stability"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    batch_size: int = field(default=256, kw_only=True)


PRESETS: Registry[Any] = Registry("preset", plugins=PAPERS)


def add_preset(p: Preset | AutoencoderPreset | SFMPreset | PartPreset | DenoiserPreset) -> Any:
    """Register a preset (each paper's module in :mod:`maskdefense.papers` adds its own)."""
    PRESETS.add(p.name, lambda **kw: type(p)(**{**asdict(p), **kw}), p.description)
    return p


#: The CPU training recipe (issue "A CPU training recipe"): the options of :class:`Preset` it sets. SGD with
#: Nesterov momentum 0.9 and a one-cycle schedule (peak lr 0.1 after 20% of the steps), label smoothing
#: 0.1, weight decay 5e-4 kept off batch-norm parameters and biases, random crop (4-pixel zero padding) and
#: horizontal flip, bfloat16 autocast and channels-last (measured ~2x faster on this CPU together:
#: results/bench/bench_train_speed.md; accuracy against time: results/recipe-cifar10).
CPU_RECIPE: dict[str, Any] = {
    "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "onecycle", "warmup": 0.2,
    "weight_decay": 5e-4, "weight_decay_norm": False, "label_smoothing": 0.1, "crop_padding": 4, "hflip": True,
    "precision": "bf16", "channels_last": True,
}
#: How the recipe differs from a paper's fp32 training (for the ``differs`` lists of CPU presets).
CPU_RECIPE_DIFFERS = ("trained with the CPU recipe: SGD Nesterov one-cycle (peak lr 0.1), label smoothing 0.1, "
                      "weight decay 5e-4 off batch norm, crop+flip, bfloat16 autocast (evaluation in fp32)",)

#: The plain ResNet-18/2 of CIFAR-10 (a paper's presets may derive twins from it, e.g. a surrogate of another seed).
RESNET18_CIFAR10_CPU = add_preset(Preset(
    "resnet18-cifar10-cpu", "cifar10", "resnet18_half", epochs=14, n_eval=1000, **CPU_RECIPE,
    differs=("ResNet-18 at width 1/2 (1/4 of the FLOPs)", "14 epochs, sized to train in <= 45 minutes on 2 CPU cores",
             *CPU_RECIPE_DIFFERS),
    description="ResNet-18 (CIFAR variant) on CIFAR-10 with the CPU recipe: the plain classifier and surrogate of the "
                "ResNet-18 defenses"))
add_preset(Preset("resnet18-cifar10-full", "cifar10", "resnet18", epochs=200, n_eval=10000,
                  **{**CPU_RECIPE, "precision": "fp32", "channels_last": False, "schedule": "cosine", "warmup": 0.25},
                  description="ResNet-18 (CIFAR variant, full width) on CIFAR-10 for GPU users: the recipe's SGD, "
                              "label smoothing, weight decay and crop+flip in fp32, 200 epochs with a cosine schedule"))

DEFAULT_MODEL = {"digits": "digits_cnn", "mnist": "lenet5", "cifar10": "vgg16_narrow", "svhn": "resnet18_narrow",
                 "tiny-imagenet": "resnet18_narrow"}


def create_preset(name: str, **overrides: Any) -> Preset:
    return PRESETS.create(name, **overrides)


def list_presets(pattern: str = "*") -> list[str]:
    return PRESETS.list(pattern)
