"""Reconstruction: a denoising or inpainting autoencoder learns to restore clean images from corrupted ones."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..transforms import Transform
from ..predict import eval_mode
from .base import Hook, Task, batched_mean, describe, eval_batch_size, transform_batched

_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


class ReconstructionTask(Task):
    """Train ``net`` (component ``network``, default ``"model"``) so that ``net(corrupt(x))`` reconstructs
    the clean ``x``: ``corrupt(images, generator)`` adds noise (a denoiser:
    :class:`~maskdefense.training.transforms.GaussianNoise`) or removes pixels (an inpainter:
    :class:`~maskdefense.ops.masking.GridMask`). ``loss`` is ``"mse"`` or ``"l1"`` (mean per pixel).
    Labels are not used. Validation: ``mse`` of the reconstruction and ``input_mse`` of the corrupted
    input itself (the error the network must beat), on validation images corrupted the same way
    every epoch."""

    name = "reconstruction"

    def __init__(self, net: nn.Module, corrupt: Transform, *, loss: str = "mse", network: str = "model",
                 hooks: Sequence[Hook] = ()) -> None:
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        super().__init__({network: net}, hooks=hooks)
        self.net, self.corrupt, self.loss_name = net, corrupt, loss

    def loss(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        return _LOSSES[self.loss_name](self.net(self.corrupt(x, generator)), x), {}

    def validate(self, val: tuple[Tensor, Tensor], generator: torch.Generator) -> dict[str, float]:
        with eval_mode(self.net):
            bs = eval_batch_size(self)
            xc = transform_batched(self.corrupt, val[0], generator, bs)

            def err(a: Tensor, b: Tensor) -> Tensor:
                return (a - b).pow(2).flatten(1).mean(1)

            return {"mse": batched_mean(lambda c, x: err(self.net(c), x), xc, val[0], bs),
                    "input_mse": batched_mean(err, xc, val[0], bs)}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "corrupt": describe(self.corrupt), "loss": self.loss_name}
