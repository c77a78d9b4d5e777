"""Checkpoints that never execute code when loaded.

A checkpoint is one safetensors file (``model.safetensors``) holding the weights, with the metadata
record embedded as JSON in the safetensors header, plus the same record as a readable sidecar
(``model.json``). The record names the architecture and its keyword arguments, so ``load_model``
rebuilds the model without the caller knowing what it is.

Training state for resuming (optimizer, epoch, RNG, history) goes to ``<name>.state.pt``, written with
``torch.save`` and read with ``torch.load(weights_only=True)``: plain tensors and containers only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as st_save
from torch import nn

from .provenance import atomic_write_bytes, atomic_write_json

FORMAT = "maskdefense-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or for another architecture."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``meta`` atomically. ``meta`` must be JSON-serializable and
    should contain ``arch`` and ``arch_kwargs`` (taken from ``model.spec`` when absent)."""
    path = Path(path)
    spec = getattr(model, "spec", None) or {}
    record = {"format": FORMAT, "arch": spec.get("name"), "arch_kwargs": spec.get("kwargs", {}), **meta}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blob = st_save(state, metadata={"maskdefense": json.dumps(record, default=str)})
    atomic_write_bytes(path, blob)
    atomic_write_json(sidecar_path(path), {**record, "sha256": hashlib.sha256(blob).hexdigest()})
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata record embedded in a checkpoint (reads only the header)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors checkpoint (file too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > 100_000_000 or n > path.stat().st_size - 8:
            raise CheckpointError(_not_safetensors(path))
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(_not_safetensors(path)) from None
    raw = (header.get("__metadata__") or {}).get("maskdefense")
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a maskdefense checkpoint (no metadata record)")
    return json.loads(raw)


def _not_safetensors(path: Path) -> str:
    with open(path, "rb") as f:
        start = f.read(2)
    kind = " (it looks like a pickle, which can run code when loaded: refused)" if start[:1] == b"\x80" or start[:2] == b"PK" else ""
    return f"{path} is not a safetensors checkpoint{kind}; maskdefense loads weights only from safetensors files"


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights from {path}: {e}") from None


def load_into(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load weights from ``path`` into ``model``; refuse a checkpoint of another architecture."""
    meta = read_metadata(path)
    spec = getattr(model, "spec", None) or {}
    if spec.get("name") and meta.get("arch") and spec["name"] != meta["arch"]:
        raise CheckpointError(
            f"{path} holds a {meta['arch']!r} model, not {spec['name']!r}; load it with load_model()"
        )
    state = load_state(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            s for s in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                "shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]) if wrong else "",
            ) if s
        )
        raise CheckpointError(
            f"{path} does not fit this model (checkpoint arch {meta.get('arch')!r} {meta.get('arch_kwargs')}): {detail}"
        )
    model.load_state_dict(state)
    return meta


def load_model(path: str | os.PathLike[str], *, eval_mode: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in a checkpoint and load its weights. Returns ``(model, meta)``;
    ``meta['sha256']`` is the hash of the checkpoint file."""
    from .models import create_model

    meta = read_metadata(path)
    if not meta.get("arch"):
        raise CheckpointError(f"{path} does not record its architecture")
    model = create_model(meta["arch"], **meta.get("arch_kwargs", {}))
    load_into(model, path)
    if eval_mode:
        model.eval()
    meta = {**meta, "sha256": file_sha256(path), "path": str(path)}
    return model, meta


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Training state (tensors, numbers, strings, lists, dicts only), written atomically."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read training state with ``weights_only=True``: a pickle carrying code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused to load {path}: it contains objects other than plain data ({e})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read training state {path}: {e}") from None
