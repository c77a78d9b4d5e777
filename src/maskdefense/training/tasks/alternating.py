"""Networks trained in alternation: every epoch, one phase per network (SFM-Defense's Algorithm 1 trains a
classifier for an epoch, then a masker for an epoch)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .base import Hook, Task, describe

#: ``loss_fn(networks, images, labels, generator) -> (loss, metrics)``.
LossFn = Callable[[Mapping[str, nn.Module], Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]]
#: ``validate_fn(networks, (images, labels), generator) -> metrics``.
ValidateFn = Callable[[Mapping[str, nn.Module], tuple[Tensor, Tensor], torch.Generator], dict[str, float]]


class AlternatingTask(Task):
    """``losses`` maps each network's name to the loss of its phase; the phases run in that order every
    epoch, the phase of a network updating that network only (the others in eval mode, frozen; the loss
    function may still use them, e.g. the classifier's loss through the masker). ``validate`` (optional)
    gives the validation metrics."""

    name = "alternating"

    def __init__(self, networks: Mapping[str, nn.Module], losses: Mapping[str, LossFn], *,
                 validate: ValidateFn | None = None, hooks: Sequence[Hook] = ()) -> None:
        super().__init__(networks, hooks=hooks)
        unknown = [k for k in losses if k not in self.networks]
        if unknown or not losses:
            raise ValueError(f"losses must name networks of the task ({list(self.networks)}), got {list(losses)}")
        self.losses = dict(losses)
        self.validate_fn = validate

    def phases(self) -> tuple[str, ...]:
        return tuple(self.losses)

    def trains(self, phase: str) -> tuple[str, ...]:
        return (phase,)

    def loss(self, phase: str, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        return self.losses[phase](self.networks, x, y, generator)

    def validate(self, val: tuple[Tensor, Tensor], generator: torch.Generator) -> dict[str, float]:
        if self.validate_fn is None:
            return {}
        modes = {k: n.training for k, n in self.networks.items()}
        for n in self.networks.values():
            n.eval()
        try:
            with torch.no_grad():
                return dict(self.validate_fn(self.networks, val, generator))
        finally:
            for k, n in self.networks.items():
                n.train(modes[k])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "losses": {k: describe(f) for k, f in self.losses.items()},
                "validate": describe(self.validate_fn)}
