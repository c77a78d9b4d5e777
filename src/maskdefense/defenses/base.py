"""The defense interface and its declared contract.

A defense is an ``nn.Module`` with the shape of locuslab/smoothing's ``Smooth``:

* ``forward(x)``: images in ``[0, 1]`` ``(N, C, H, W)`` -> logits ``(N, K)``, differentiable end to
  end: this is what an adaptive (white-box) attacker differentiates. A randomized defense returns the
  log of its mean softmax over its random samples (:func:`maskdefense.ops.eot.log_mean_softmax`), a
  valid logit vector, never raw probabilities; a step with no useful gradient goes through BPDA
  (:mod:`maskdefense.ops.bpda`) inside ``forward`` and is named in the contract;
* ``predict(x, generator=...)``: the defense's actual decision, which may differ from
  ``forward(x).argmax(1)`` (a majority vote); ``ABSTAIN`` (-1) means no label: the defense abstains, or,
  for a detector, rejects the input;
* ``detect(x)``: for a defense that may reject (a detector), a differentiable score per image; the
  defense rejects where the score exceeds its threshold;
* ``contract()``: a :class:`Contract` declaring what the harness must know (randomness, samples per
  forward, BPDA steps, rejection, components). The evaluation harness, its threat models and its
  integrity checks read this declaration and nothing else.
* ``base``: the undefended classifier underneath;
* ``oblivious_target()``: what the gray-box (oblivious) attacker attacks, and its description: the base
  network by default; a defense whose gray-box attacker also knows some of its learned parts (SFM-Defense's
  masker) returns their composition with the base.

Certification against patches (``certify`` beside ``predict``) lives in :mod:`maskdefense.certify`, whose
certifiers are defenses of this interface too; randomized smoothing
(:class:`~maskdefense.defenses.smoothing.Smoothing`) certifies an L2 radius (Cohen et al.) the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ABSTAIN", "REJECT", "OBLIVIOUS_BASE", "Contract", "Defense", "NoDefense", "contract_of"]

#: Prediction meaning "no label": the defense abstains (a vote without a clear winner).
ABSTAIN = -1
#: Prediction of a detector that rejects its input (the same code: no label was given).
REJECT = ABSTAIN
#: The description of the default gray-box target (:meth:`Defense.oblivious_target`), recorded with every run.
OBLIVIOUS_BASE = "base model (no defense)"


def _names(value: object, field: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    if not all(isinstance(s, str) and s for s in items) or len(set(items)) != len(items):
        raise ValueError(f"Contract.{field} must be distinct non-empty names, got {value!r}")
    return items


@dataclass(frozen=True)
class Contract:
    """What a defense declares to the evaluation harness.

    randomized : two calls on the same input may differ (an adaptive attack then needs EOT).
    samples_per_forward : random samples one ``forward`` averages (MAD's ``n_grad``); 1 when
        deterministic.
    non_differentiable : named steps of ``forward`` with no useful gradient (quantization, a median
        filter, a hard vote). Every one must also be a BPDA step, else an adaptive attack's gradients
        are meaningless (flag ``NON_DIFFERENTIABLE_WITHOUT_BPDA``).
    bpda_steps : named steps that ``forward`` passes through BPDA (its backward pass uses the identity
        or a differentiable approximation); they count as non-differentiable steps.
    rejects : the defense may reject an input (a detector): ``predict`` returns ``REJECT`` where
        ``detect(x) > reject_threshold``. The harness then scores it as a detector and attacks
        classifier and detector together in the adaptive threat model.
    reject_threshold : the detector's threshold (required exactly when ``rejects``).
    components : named sub-networks: attribute names of ``nn.Module`` parts of the defense
        (``("base",)``; a detector: ``("base", "detector")``).
    """

    randomized: bool = False
    samples_per_forward: int = 1
    non_differentiable: tuple[str, ...] = ()
    bpda_steps: tuple[str, ...] = ()
    rejects: bool = False
    reject_threshold: float | None = None
    components: tuple[str, ...] = ("base",)

    def __post_init__(self) -> None:
        spf = self.samples_per_forward
        if isinstance(spf, bool) or not isinstance(spf, int) or spf < 1:
            raise ValueError(f"Contract.samples_per_forward must be a positive int, got {spf!r}")
        if not self.randomized and spf != 1:
            raise ValueError("a deterministic defense averages no random samples: samples_per_forward must be 1")
        bpda = _names(self.bpda_steps, "bpda_steps")
        nondiff = _names(self.non_differentiable, "non_differentiable")
        object.__setattr__(self, "bpda_steps", bpda)
        object.__setattr__(self, "non_differentiable", nondiff + tuple(s for s in bpda if s not in nondiff))
        object.__setattr__(self, "components", _names(self.components, "components"))
        t = self.reject_threshold
        if self.rejects != (t is not None):
            raise ValueError("Contract.reject_threshold is required exactly when the defense rejects inputs")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise ValueError(f"Contract.reject_threshold must be a finite number, got {t!r}")

    @property
    def missing_bpda(self) -> tuple[str, ...]:
        """Non-differentiable steps without BPDA."""
        return tuple(s for s in self.non_differentiable if s not in self.bpda_steps)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Defense(nn.Module):
    """Base class of every defense; see the module docstring. Subclasses implement ``forward``, and
    override ``contract`` (default: deterministic, differentiable, never rejects, one component ``base``),
    ``predict`` and ``config`` as needed; a detector implements ``detect``."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def contract(self) -> Contract:
        """The declaration the harness reads (see :class:`Contract`)."""
        return Contract()

    def oblivious_target(self) -> tuple[nn.Module, str]:
        """What the gray-box (oblivious) attacker attacks, and a description of it: by default the base
        network, without the defense. A defense whose gray-box attacker also knows some of its learned parts
        returns their composition with the base (a module over the defense's own sub-networks)."""
        return self.base, OBLIVIOUS_BASE

    def detect(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Detector score per image ``(N,)``, higher = more suspicious, differentiable w.r.t. ``x``;
        the defense rejects where it exceeds ``contract().reject_threshold``. Only for detectors."""
        raise NotImplementedError(f"{type(self).__name__} does not reject inputs (its contract says rejects=False)")

    @torch.no_grad()
    def predict(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The decision per image (``ABSTAIN``/``REJECT`` = -1 allowed). Default: argmax of forward, and
        for a detector ``REJECT`` where ``detect(x)`` exceeds the threshold."""
        pred = self(x).argmax(1)
        c = self.contract()
        if c.rejects:
            pred = torch.where(self.detect(x, generator=generator) > c.reject_threshold,
                               torch.full_like(pred, REJECT), pred)
        return pred

    def config(self) -> dict[str, object]:
        """JSON-serializable description of the defense (written into every result record)."""
        return {"defense": type(self).__name__}


class NoDefense(Defense):
    """The undefended base model, wrapped so that it has the defense interface."""

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)

    def config(self) -> dict[str, object]:
        return {"defense": "none"}


def contract_of(defense: nn.Module) -> Contract:
    """The checked contract of ``defense`` (a plain ``nn.Module`` is an undefended model): a
    :class:`Contract` whose components exist as sub-networks and, for a detector, with ``detect``."""
    if not isinstance(defense, Defense):
        return Contract(components=())
    c = defense.contract()
    if not isinstance(c, Contract):
        raise TypeError(f"{type(defense).__name__}.contract() must return a Contract, got {type(c).__name__}")
    for name in c.components:
        try:
            defense.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{type(defense).__name__} declares component {name!r} but has no sub-network of that name") from None
    if c.rejects and type(defense).detect is Defense.detect:
        raise ValueError(f"{type(defense).__name__} declares rejects=True but does not implement detect()")
    return c
