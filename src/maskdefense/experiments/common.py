"""Shared pieces of the experiments: getting (training if needed) the models a study needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..checkpoint import load_model, read_metadata
from ..training.presets import Preset, create_preset
from ..training.loop import train_on_dataset


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


def harness_wall_time(run_dirs: Iterable[Path]) -> float:
    """Total wall time of the harness runs in ``run_dirs`` (over all resumptions), from their run.json."""
    import json

    return round(sum(float(json.loads((d / "run.json").read_text()).get("wall_time_s_total") or 0.0)
                     for d in run_dirs if (d / "run.json").exists()), 1)


def mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none: e.g. no image was correct)."""
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
