"""Shared pieces of the experiments: getting (training if needed) the models a study needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import load_model, read_metadata
from ..presets import Preset, create_preset
from ..train import train_on_dataset


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
    train_on_dataset(p.dataset, p.model, p.train_config(seed=0), out_dir=path.parent, model_kwargs=p.model_kwargs,
                     transform=p.transform(), data_root=data_root, log=log, progress=progress)
    return load_model(path)  # with the checkpoint's sha256 in its metadata


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
