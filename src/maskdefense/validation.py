"""Input checks shared by every public entry point.

Convention (defined here, once): images are float32 tensors of shape ``(N, C, H, W)`` with values in
``[0, 1]``; normalization happens inside the models. Every other dtype is refused, never converted
silently: uint8 images need scaling (``x.float() / 255``), float16/bfloat16 images would round every
adversarial perturbation off its budget, and float64 images would meet float32 weights.
"""

from __future__ import annotations

import torch
from torch import Tensor


_DTYPE_HINTS = {
    torch.uint8: "divide uint8 images by 255 (x.float() / 255)",
    torch.float16: "convert them with x.float() (in half precision an adversarial example rounds past its budget)",
    torch.bfloat16: "convert them with x.float() (in half precision an adversarial example rounds past its budget)",
    torch.float64: "convert them with x.float() (the models' weights are float32)",
}


class InputError(ValueError):
    """Bad input to a public function: wrong type, shape, dtype, range, or NaN."""


def positive_int(v: object, name: str) -> int:
    """``v`` if it is an int >= 1 (not a bool), else a ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def check_images(
    x: object,
    *,
    channels: int | None = None,
    size: tuple[int, int] | int | None = None,
    name: str = "images",
) -> Tensor:
    """Return ``x`` unchanged if it is a valid image batch, else raise :class:`InputError`."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(
            f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}"
            + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )
    if x.dtype != torch.float32:
        raise InputError(f"{name} must be float32 with values in [0, 1], got dtype {x.dtype}: " + _DTYPE_HINTS.get(
            x.dtype, "convert them with x.float()" if x.is_floating_point() else "convert them to float32 in [0, 1]"))
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channel(s), got shape {tuple(x.shape)}")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[2:]) != hw:
            raise InputError(f"{name} must be {hw[0]}x{hw[1]}, got shape {tuple(x.shape)}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{name} contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{name} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]"
                + (" (divide by 255?)" if hi > 1.0 and hi <= 255.0 else "")
            )
    return x


def check_labels(y: object, n: int, num_classes: int | None = None, name: str = "labels") -> Tensor:
    if not isinstance(y, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"{name} must be an integer tensor, got {y.dtype}")
    if n and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise InputError(f"{name} must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return y.long()
