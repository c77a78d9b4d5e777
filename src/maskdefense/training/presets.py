"""Named training presets: the papers' full-size settings (for GPU users) and the CPU-sized ones this
project runs, each saying how it differs from the paper (its ``differs`` field).

The presets live with their paper (:mod:`maskdefense.papers`) and are registered with :func:`add_preset`
when the plugin group ``maskdefense.plugins`` is loaded (lazily, at the first lookup).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..registry import PAPERS, Registry


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
        """The :class:`~maskdefense.training.config.TrainConfig` of this preset."""
        from .config import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           schedule=self.schedule, weight_decay=self.weight_decay, seed=seed)

    def transform(self) -> Any:
        """MAD's training transform (``GridMask``) of this preset, or ``None`` when it trains unmasked."""
        if self.train_cell is None:
            return None
        from ..ops.masking import GridMask

        return GridMask(self.train_cell, self.train_rate)


PRESETS: Registry[Preset] = Registry("preset", plugins=PAPERS)


def add_preset(p: Preset) -> Preset:
    """Register a preset (each paper's module in :mod:`maskdefense.papers` adds its own)."""
    PRESETS.add(p.name, lambda **kw: Preset(**{**asdict(p), **kw}), p.description)
    return p


DEFAULT_MODEL = {"digits": "digits_cnn", "mnist": "lenet5", "cifar10": "vgg16_narrow", "svhn": "resnet18_narrow"}


def create_preset(name: str, **overrides: Any) -> Preset:
    return PRESETS.create(name, **overrides)


def list_presets(pattern: str = "*") -> list[str]:
    return PRESETS.list(pattern)
