"""Running one attack: :func:`run_attack`.

Randomness: every attack draws its random numbers from one seed taken from ``generator``. Library
attacks (Foolbox, AutoAttack) use torch's global generator, so they run inside
``torch.random.fork_rng`` seeded with that seed: the caller's global RNG state is left untouched and
the same ``generator`` state gives the same adversarial examples. A randomized target model (a MAD
defense attacked end to end) that draws from the global generator is seeded the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from ..validation import check_images, check_labels
from .spec import AttackSpec, parse_attack_spec

__all__ = ["run_attack", "seed_from_generator", "frozen_parameters"]


def seed_from_generator(generator: torch.Generator | None) -> int:
    """A 62-bit seed drawn from ``generator`` (or from the global generator if ``None``)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Attacks need gradients w.r.t. the input only: switch off the parameters' gradients (Foolbox's
    ``loss.backward()`` would otherwise compute and accumulate them, ~25% slower), then restore them."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def run_attack(
    spec: AttackSpec | str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the attack ``spec`` against ``model`` (images in ``[0, 1]`` -> logits) on ``(x, y)``.

    Returns the attack's raw adversarial examples (detached, same shape as ``x``). Nothing is
    verified here: the harness (:func:`maskdefense.eval.verify_perturbation`) checks the budget and
    the pixel range and decides success from the model's predictions.
    """
    if isinstance(spec, str):
        spec = parse_attack_spec(spec)
    check_images(x, name="attack inputs")
    y = check_labels(y, x.shape[0])
    if x.shape[0] == 0:
        return x.detach().clone()
    seed = seed_from_generator(generator)
    d = spec.definition
    x = x.detach().contiguous()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), frozen_parameters(model):
        torch.manual_seed(seed)
        g = torch.Generator(device=x.device).manual_seed(seed)
        out = d.runner(d, spec.params, model, x, y.to(x.device), g)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise RuntimeError(f"attack {spec.name} returned {type(out).__name__} "
                           f"{tuple(out.shape) if isinstance(out, Tensor) else ''}, expected shape {tuple(x.shape)}")
    return out.detach()
