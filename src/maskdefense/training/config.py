"""The trainer's settings and its per-epoch record."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """Settings of one training run. Defaults are MAD's (Adam, learning rate 1e-3); SGD with Nesterov
    momentum and a cosine schedule (over all steps of the run) are options. Every optimizer of a task is
    built from these settings.

    Data augmentation (off by default: digits must not be flipped): ``crop_padding`` > 0 pads each
    training image by that many zero pixels and crops it back at a random offset; ``hflip`` mirrors each
    image left-right with probability 1/2. Both are drawn from the trainer's seeded generator.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"  # "none" or "cosine"
    seed: int = 0
    eval_batch_size: int = 1000
    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("none", "cosine"):
            raise ValueError(f"schedule must be 'none' or 'cosine', got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1 and lr > 0")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1 or self.crop_padding < 0:
            raise ValueError("weight_decay and crop_padding must be >= 0 and momentum in [0, 1)")


@dataclass
class EpochStats:
    """One epoch: the training metrics averaged over the epoch's images (``metrics``; a task with several
    phases names them ``<phase>/<metric>``), the validation metrics (``val``), wall seconds and the
    learning rate of the first phase at the epoch's end. ``train_loss``, ``train_accuracy`` and
    ``val_accuracy`` repeat the usual ones (``None`` when the task has none)."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_accuracy: float | None
    seconds: float
    lr: float
    metrics: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
