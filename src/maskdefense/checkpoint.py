"""Checkpoints that never execute code when loaded.

A checkpoint is one safetensors file (``model.safetensors``) holding the weights, with the metadata
record embedded as JSON in the safetensors header, plus the record and the run's metadata as a readable
sidecar (``model.json``).

* **The embedded record** says what the weights are: the architecture and its keyword arguments (so
  :func:`load_model` rebuilds the model without the caller knowing what it is), how they were trained,
  and ``weights_sha256``, a hash of the tensors (:func:`weights_sha256`) checked on every load: a flipped
  byte is refused. It holds nothing about the run itself (no time, no command line) and is written as
  key-ordered JSON, so identical training gives a byte-identical file.
* **The sidecar** ``<name>.json`` repeats the record and adds the run's metadata (command, start time,
  machine, wall time, seconds per epoch) and ``sha256``, the hash of the whole checkpoint file.
* **Several networks** (a defense with several trained parts) are one artefact: :func:`save_components`
  writes every named component into the same file (tensor ``<component>/<key>``) with one record listing
  the components, each with its architecture and weights hash; :func:`load_components` refuses a
  missing, unexpected or mismatched component by name. A single network (:func:`save_checkpoint`) keeps
  the plain layout (tensor names as in its ``state_dict``), read as the one component ``"model"``;
  checkpoints written before the weights hash existed still load (their sidecar's file hash is checked).

Training state for resuming (optimizer, epoch, RNG, history) is written with ``torch.save`` and read with
``torch.load(weights_only=True)``: plain tensors and containers only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as st_save
from torch import Tensor, nn

from .provenance import atomic_write_bytes, atomic_write_json

FORMAT = "maskdefense-checkpoint-v1"
#: Format of an artefact of several named networks (:func:`save_components`).
FORMAT_COMPONENTS = "maskdefense-components-v1"
#: The component name of a single-network checkpoint.
MODEL = "model"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or for another architecture."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 of a state dict: for each tensor in key order, its name, dtype and shape, then its bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".json")


def _state_of(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def _spec(module: nn.Module) -> tuple[str | None, dict[str, Any]]:
    spec = getattr(module, "spec", None) or {}
    return spec.get("name"), dict(spec.get("kwargs", {}))


def _write(path: str | os.PathLike[str], state: dict[str, Tensor], record: dict[str, Any],
           run: Mapping[str, Any] | None) -> Path:
    """Write the weights with ``record`` embedded (canonical JSON), then the sidecar (record + ``run``)."""
    path = Path(path)
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    try:
        blob = st_save(state, metadata={"maskdefense": text})
    except (ValueError, RuntimeError) as e:  # e.g. tensors sharing memory
        raise CheckpointError(f"cannot write {path}: {e}") from None
    atomic_write_bytes(path, blob)
    atomic_write_json(sidecar_path(path), {**json.loads(text), **dict(run or {}),
                                           "sha256": hashlib.sha256(blob).hexdigest()})
    return path


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], meta: Mapping[str, Any], *,
                    run: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and the record ``meta`` (JSON-serializable; ``arch`` and ``arch_kwargs``
    are taken from ``model.spec``) atomically. ``run`` (command, times, ...) goes to the sidecar only."""
    arch, kwargs = _spec(model)
    state = _state_of(model)
    record = {"arch": arch, "arch_kwargs": kwargs,
              **{k: v for k, v in meta.items() if k not in ("components", "sha256", "path")},
              "format": FORMAT, "weights_sha256": weights_sha256(state)}
    return _write(path, state, record, run)


def save_components(networks: Mapping[str, nn.Module], path: str | os.PathLike[str], meta: Mapping[str, Any], *,
                    run: Mapping[str, Any] | None = None) -> Path:
    """Write several named networks as one checkpoint (one file, one record; see the module docstring)."""
    if not networks:
        raise ValueError("save_components needs at least one network")
    state: dict[str, Tensor] = {}
    components: dict[str, Any] = {}
    for name, net in networks.items():
        if not name or "/" in name:
            raise ValueError(f"component names must be non-empty and contain no '/', got {name!r}")
        arch, kwargs = _spec(net)
        s = _state_of(net)
        components[name] = {"arch": arch, "arch_kwargs": kwargs, "weights_sha256": weights_sha256(s)}
        state.update({f"{name}/{k}": v for k, v in s.items()})
    drop = ("arch", "arch_kwargs", "weights_sha256", "sha256", "path")
    record = {**{k: v for k, v in meta.items() if k not in drop}, "format": FORMAT_COMPONENTS,
              "components": components}
    return _write(path, state, record, run)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata record embedded in a checkpoint (reads only the header; see :func:`verify_checkpoint`)."""
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
    raw = (header.get("__metadata__") or {}).get("maskdefense") if isinstance(header, dict) else None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a maskdefense checkpoint (no metadata record)")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its metadata record is not valid JSON (corrupted file?)") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: its metadata record is not a JSON object (corrupted file?)")
    return record


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar ``<name>.json`` of a checkpoint (record + run metadata), or ``{}`` when absent or unreadable."""
    try:
        side = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return side if isinstance(side, dict) else {}


def _not_safetensors(path: Path) -> str:
    with open(path, "rb") as f:
        start = f.read(2)
    kind = " (it looks like a pickle, which can run code when loaded: refused)" if start[:1] == b"\x80" or start[:2] == b"PK" else ""
    return f"{path} is not a safetensors checkpoint{kind}; maskdefense loads weights only from safetensors files"


def components_of(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The components of a checkpoint record: name -> ``{arch, arch_kwargs, weights_sha256}``
    (a single-network checkpoint has the one component ``"model"``)."""
    if "components" in record:
        comps = record["components"]
        if not isinstance(comps, dict) or not all(isinstance(c, dict) for c in comps.values()):
            raise CheckpointError("the checkpoint's component list is malformed")
        return {k: dict(v) for k, v in comps.items()}
    return {MODEL: {"arch": record.get("arch"), "arch_kwargs": record.get("arch_kwargs", {}),
                    "weights_sha256": record.get("weights_sha256")}}


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights from {path}: {e}") from None


def _read_states(path: str | os.PathLike[str], record: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
    """The tensors of each component, each checked against its recorded weights hash."""
    comps = components_of(record)
    state = load_state(path)
    if "components" not in record:
        states = {MODEL: state}
    else:
        states = {name: {} for name in comps}
        for key, t in state.items():
            name, _, rest = key.partition("/")
            if name not in states or not rest:
                raise CheckpointError(f"{path} holds tensor {key!r}, which belongs to no recorded component")
            states[name][rest] = t
    for name, c in comps.items():
        want = c.get("weights_sha256")
        if want is None:
            _check_legacy(path)
        elif weights_sha256(states[name]) != want:
            what = "its weights" if "components" not in record else f"the weights of its component {name!r}"
            raise CheckpointError(f"{path} is corrupted: {what} do not match the hash recorded with them "
                                  "(a modified or damaged file); refusing to load it")
    return states


def _check_legacy(path: str | os.PathLike[str]) -> None:
    """A checkpoint without an embedded weights hash (older version): check the sidecar's file hash."""
    want = read_sidecar(path).get("sha256")
    if want and file_sha256(path) != want:
        raise CheckpointError(f"{path} is corrupted: its sha256 does not match the one recorded in "
                              f"{sidecar_path(path).name}; refusing to load it")


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read every tensor of a checkpoint and check its weights hashes; return the record."""
    record = read_metadata(path)
    _read_states(path, record)
    return record


def _load_module(module: nn.Module, state: dict[str, Tensor], path: str | os.PathLike[str], name: str,
                 comp: Mapping[str, Any]) -> None:
    where = f"{path}" if name == MODEL else f"component {name!r} of {path}"
    arch = getattr(module, "spec", None) or {}
    if arch.get("name") and comp.get("arch") and arch["name"] != comp["arch"]:
        raise CheckpointError(f"{where} holds a {comp['arch']!r} model, not {arch['name']!r}"
                              + ("; load it with load_model()" if name == MODEL else ""))
    own = module.state_dict()
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
            f"{where} does not fit this model (checkpoint arch {comp.get('arch')!r} {comp.get('arch_kwargs')}): {detail}"
        )
    module.load_state_dict(state)


def load_into(model: nn.Module, path: str | os.PathLike[str], component: str = MODEL) -> dict[str, Any]:
    """Load weights from ``path`` (its network ``component``) into ``model``; refuse a checkpoint of another
    architecture or with corrupted weights. Returns the record."""
    record = read_metadata(path)
    comps = components_of(record)
    if component not in comps:
        raise CheckpointError(_no_component(path, component, comps))
    states = _read_states(path, record)
    _load_module(model, states[component], path, component, comps[component])
    return record


def _no_component(path: str | os.PathLike[str], name: str, comps: Mapping[str, Any]) -> str:
    return (f"{path} has no component {name!r} (it holds {', '.join(sorted(comps))}); "
            "load it with load_components()")


def _build(path: str | os.PathLike[str], name: str, comp: Mapping[str, Any]) -> nn.Module:
    from .models import create_model

    if not comp.get("arch"):
        what = "" if name == MODEL else f" of component {name!r}"
        raise CheckpointError(f"{path} does not record the architecture{what}; build the network and "
                              "pass it to load_components()/load_into()")
    return create_model(comp["arch"], **comp.get("arch_kwargs", {}))


def load_components(
    path: str | os.PathLike[str], modules: Mapping[str, nn.Module] | None = None, *, eval_mode: bool = True,
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Load every component of a checkpoint. With ``modules`` (name -> network), the names must be exactly
    the checkpoint's components and each network must fit its weights; without, each component is rebuilt
    from its recorded (registered) architecture. Returns ``(networks, meta)`` with ``meta['sha256']``."""
    record = read_metadata(path)
    comps = components_of(record)
    if modules is not None:
        missing = [n for n in modules if n not in comps]
        extra = [n for n in comps if n not in modules]
        if missing:
            raise CheckpointError(f"{path} has no component {', '.join(map(repr, missing))} "
                                  f"(it holds {', '.join(sorted(comps))})")
        if extra:
            raise CheckpointError(f"{path} holds component(s) {', '.join(map(repr, extra))} that were not asked "
                                  f"for (asked: {', '.join(modules)})")
    states = _read_states(path, record)
    nets = {n: (modules[n] if modules is not None else _build(path, n, c)) for n, c in comps.items()}
    for n, net in nets.items():
        _load_module(net, states[n], path, n, comps[n])
        if eval_mode:
            net.eval()
    return nets, {**record, "sha256": file_sha256(path), "path": str(path)}


def load_model(path: str | os.PathLike[str], *, eval_mode: bool = True,
               component: str = MODEL) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network recorded in a checkpoint (its ``component``, ``"model"`` by default) and load its
    weights. Returns ``(model, meta)``; ``meta['sha256']`` is the hash of the checkpoint file."""
    record = read_metadata(path)
    comps = components_of(record)
    if component not in comps:
        raise CheckpointError(_no_component(path, component, comps))
    model = _build(path, component, comps[component])
    _load_module(model, _read_states(path, record)[component], path, component, comps[component])
    if eval_mode:
        model.eval()
    return model, {**record, "sha256": file_sha256(path), "path": str(path)}


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
