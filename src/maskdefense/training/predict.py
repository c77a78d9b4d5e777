"""Predictions and accuracy of a classifier, in batches."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its previous mode restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@torch.no_grad()
def predict_labels(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Argmax predictions of ``model`` in batches (the model is used in whatever mode it is in)."""
    out = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` that ``model`` (in eval mode for the call) classifies as ``labels``."""
    with eval_mode(model):
        return float((predict_labels(model, images, batch_size) == labels).float().mean())
