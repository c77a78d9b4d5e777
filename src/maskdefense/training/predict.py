"""Predictions and accuracy of a classifier, in batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_labels(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Argmax predictions of ``model`` in batches (the model is used in whatever mode it is in)."""
    out = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` that ``model`` (in eval mode for the call) classifies as ``labels``."""
    was = model.training
    model.eval()
    try:
        return float((predict_labels(model, images, batch_size) == labels).float().mean())
    finally:
        model.train(was)
