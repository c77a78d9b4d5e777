"""Randomness, defined once: every random draw of the library comes from an explicit ``torch.Generator``.

* :func:`seeded` -- a CPU generator seeded with ``seed``;
* :func:`derive_seed` -- a stable 63-bit seed from any parts (``(seed, "attack", threat, key, batch)``),
  the same across processes and platforms, so every task of a run has its own reproducible stream;
* :func:`draw_seed` -- a seed drawn from a generator, for code that re-seeds a library's global generator;
* :func:`uniform`, :func:`normal` -- noise drawn on the generator's device, then moved to ``device``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

__all__ = ["seeded", "derive_seed", "draw_seed", "uniform", "normal"]


def seeded(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts (stable across processes and platforms)."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def draw_seed(generator: torch.Generator | None, high: int = 2**62) -> int:
    """A seed in ``[0, high)`` drawn from ``generator`` (torch's global generator when ``None``)."""
    return int(torch.randint(0, high, (1,), generator=generator).item())


def uniform(shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str | None = None) -> Tensor:
    """Uniform ``[0, 1)`` noise drawn from ``generator`` (on its device; the global generator when
    ``None``), moved to ``device``."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def normal(shape: tuple[int, ...], generator: torch.Generator | None,
           device: torch.device | str | None = None) -> Tensor:
    """Standard normal noise drawn from ``generator`` (as :func:`uniform`), moved to ``device``."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)
