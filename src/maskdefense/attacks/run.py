"""Running one attack: :func:`run_attack`; the callable :class:`Attack` and the ``ATTACKS`` registry.

Randomness: every attack draws its random numbers from one seed taken from ``generator``. Library
attacks (Foolbox, AutoAttack) use torch's global generator, so they run inside
``torch.random.fork_rng`` seeded with that seed: the caller's global RNG state is left untouched and
the same ``generator`` state gives the same adversarial examples. A randomized target model (a MAD
defense attacked end to end) that draws from the global generator is seeded the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator, NoReturn

import torch
from torch import Tensor, nn

from ..registry import Registry
from ..seeding import draw_seed
from ..validation import check_images, check_labels
from .base import AttackDef, attack_def, list_attacks
from .spec import AttackSpec, parse_attack_spec, resolve_spec

__all__ = ["run_attack", "seed_from_generator", "frozen_parameters", "Attack", "ATTACKS"]


def seed_from_generator(generator: torch.Generator | None) -> int:
    """A 62-bit seed drawn from ``generator`` (or from the global generator if ``None``)."""
    return draw_seed(generator)


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


class Attack:
    """A resolved attack, callable as ``attack(model, x, y, generator=...) -> x_adv``.

    ``ATTACKS.create("pgd-linf", eps=0.3)`` returns one. The result is the attack's raw output:
    the harness verifies norms and range and decides success itself.
    """

    def __init__(self, spec: AttackSpec) -> None:
        self.spec = spec

    @property
    def definition(self) -> AttackDef:
        return attack_def(self.spec.name)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *,
                 generator: torch.Generator | None = None) -> Tensor:
        return run_attack(self.spec, model, x, y, generator)

    def __repr__(self) -> str:
        return f"Attack({self.spec.text!r})"


def _create(name: str, **params: Any) -> Attack:
    return Attack(resolve_spec(name, params))


class _AttackRegistry(Registry[Attack]):
    """Every registered definition (:func:`~maskdefense.attacks.base.register_attack`), created as a
    resolved :class:`Attack`. Its entries mirror the definitions: register an attack with
    ``register_attack(AttackDef(...))``, not here."""

    def _load(self) -> None:
        for name in list_attacks():
            if name not in self._entries:
                super().add(name, partial(_create, name), attack_def(name).description)

    def add(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("register an attack with maskdefense.attacks.register_attack(AttackDef(...))")


#: ``ATTACKS.create("pgd-linf", eps=0.3)`` -> :class:`Attack`; ``ATTACKS.list()``, ``ATTACKS.entry(name)``.
ATTACKS: Registry[Attack] = _AttackRegistry("attack")
