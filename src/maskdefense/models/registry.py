"""The model registry: every model, built in or registered by a user, is built through it and records how.

``MODELS.create(name, **kw)`` (or :func:`create_model`) calls the registered factory with the registered
defaults overridden by ``kw`` and sets ``model.spec = {"name": name, "kwargs": {...}}`` (the merged keyword
arguments, tuples as lists): what a checkpoint stores as ``arch`` / ``arch_kwargs`` so that
:func:`maskdefense.checkpoint.load_model` rebuilds the same architecture. A model registered through
``@MODELS.register("name")`` (or :func:`register`) is therefore saved and reloaded like a built-in one, as
long as its factory's keyword arguments are JSON values and it is registered in the loading process too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry

__all__ = ["MODELS", "ModelRegistry", "create_model", "list_models", "register"]


def _jsonable(v: Any) -> Any:
    """Tuples as lists (recursively), so that a spec equals its JSON round trip."""
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


class ModelRegistry(Registry[nn.Module]):
    """A :class:`~maskdefense.registry.Registry` whose :meth:`create` stamps ``model.spec`` on every model."""

    def create(self, name: str, **kwargs: Any) -> nn.Module:
        e = self.entry(name)
        kw = {**e.defaults, **kwargs}
        model = e.factory(**kw)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model factory {e.name!r} returned {type(model).__name__}, not a torch.nn.Module")
        model.spec = {"name": e.name, "kwargs": _jsonable(kw)}
        return model


MODELS = ModelRegistry("model")
register = MODELS.register


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments override the registered defaults."""
    return MODELS.create(name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the glob ``pattern``, sorted."""
    return MODELS.list(pattern)
