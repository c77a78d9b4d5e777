"""Shared pieces of the experiments: getting (training if needed) the models a study needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import load_model, read_metadata
from ..presets import Preset, create_preset
from ..train import TrainConfig, train_on_dataset


def preset_transform(p: Preset) -> Any:
    if p.train_cell is None:
        return None
    from ..masking import GridMask

    return GridMask(p.train_cell, p.train_rate)


def ensure_model(
    preset: str | Preset,
    runs_dir: str | Path = "runs",
    *,
    data_root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model trained with ``preset`` at ``runs_dir/<preset>/model.safetensors``; trained (or the
    interrupted training resumed) first when that checkpoint is missing or not finished."""
    p = create_preset(preset, **overrides) if isinstance(preset, str) else preset
    path = Path(runs_dir) / p.name / "model.safetensors"
    if path.exists():
        meta = read_metadata(path)
        if meta.get("epochs") == p.epochs and "test_accuracy" in meta:
            return load_model(path)
    config = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer=p.optimizer, lr=p.lr,
                         schedule=p.schedule, weight_decay=p.weight_decay, seed=0)
    model, meta = train_on_dataset(p.dataset, p.model, config, out_dir=path.parent, model_kwargs=p.model_kwargs,
                                   transform=preset_transform(p), data_root=data_root, log=log, progress=progress)
    return load_model(path)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
