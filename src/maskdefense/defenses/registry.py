"""The defense registry and spec syntax: ``none`` or ``mad:cell=7,rate=0.75,n=5`` -> a :class:`~maskdefense.defenses.base.Defense`.

``DEFENSES`` is a registry of factories ``factory(base, **params) -> Defense``; register more with
``DEFENSES.add("remix", make_remix, "REMIX ...")``. Parameters are parsed with the attack spec value
syntax (:func:`maskdefense.attacks.parse_params`) and passed as keyword arguments; the factory
validates them (a ``TypeError`` for an unknown keyword becomes a :class:`SpecError`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..spec import SpecError
from .base import Defense, NoDefense
from ..registry import Registry

__all__ = ["DEFENSES", "parse_defense_spec", "build_defense", "create_defense", "list_defenses"]

DEFENSES: Registry[Defense] = Registry("defense")


def _none(base: nn.Module) -> Defense:
    return NoDefense(base)


def _mad(base: nn.Module, **params: Any) -> Defense:
    from .mad import MADClassifier

    if "cell" not in params or "rate" not in params:
        raise SpecError("mad needs cell and rate, e.g. mad:cell=7,rate=0.75 (MNIST) or mad:cell=4,rate=0.75 (CIFAR-10)")
    return MADClassifier(base, **params)


def _load(path: Any, what: str, component: str = "model") -> nn.Module:
    from ..checkpoint import load_model

    if not isinstance(path, str) or not path:
        raise SpecError(f"{what} must be the path of a checkpoint, got {path!r}")
    return load_model(path, component=component)[0].eval()


def _remix(base: nn.Module, *, inpainter: str, n: int, k: int = 1, reformer: str | None = None, n_grad: int = 8,
           votes: int = 1) -> Defense:
    from .remix import REMIX

    return REMIX(base, _load(inpainter, "inpainter"), n=n, k=k,
                 reformer=_load(reformer, "reformer") if reformer is not None else None, n_grad=n_grad, votes=votes)


def _reformer(base: nn.Module, *, reformer: str) -> Defense:
    from .magnet import MagNet

    return MagNet(base, reformer=_load(reformer, "reformer"))


def _squeeze(base: nn.Module, *, method: str | None = None, n_grad: int = 8, **params: Any) -> Defense:
    from ..ops.squeeze import create_squeezers
    from .squeeze import Squeeze

    if method is None:
        raise SpecError("squeeze needs method, e.g. squeeze:method=bits,bits=5 or squeeze:method=median+nlmeans")
    return Squeeze(base, create_squeezers(method, **params), n_grad=n_grad)


def _tvm(base: nn.Module, *, n_grad: int = 8, **params: Any) -> Defense:
    if "method" in params:
        raise SpecError("tvm takes no method: it is squeeze:method=tvm (chain squeezers with squeeze:method=median+tvm)")
    return _squeeze(base, method="tvm", n_grad=n_grad, **params)


def _sfm(base: nn.Module, *, masker: str, method: str | None = None, n_grad: int = 8, **params: Any) -> Defense:
    """The masker of an SFM training run's checkpoint (its component ``"masker"``) around ``base``, which
    must be the classifier it was trained with (its component ``"classifier"``), then the squeezers
    ``method`` (none: the masker alone)."""
    from ..checkpoint import components_of, load_model, weights_sha256
    from ..ops.squeeze import create_squeezers
    from .sfm import SFMDefense

    if not isinstance(masker, str) or not masker:
        raise SpecError(f"masker must be the path of a checkpoint, got {masker!r}")
    net, meta = load_model(masker, component="masker")
    trained = components_of(meta).get("classifier", {}).get("weights_sha256")
    if trained is not None and trained != weights_sha256(base.state_dict()):
        raise SpecError(f"the model is not the classifier the masker of {masker} was trained with: use its "
                        "component 'classifier' (load_model(path, component='classifier'))")
    if method is None and params:
        raise SpecError(f"sfm: {', '.join(sorted(params))} without method (e.g. sfm:masker=CKPT,method=median,size=2)")
    return SFMDefense(base, net, create_squeezers(method, **params) if method is not None else None, n_grad=n_grad)


def _unmask(base: nn.Module, *, extractor: str, classes: Any, mode: str = "detect", threshold: float = 0.7,
            rule: str = "max", area_threshold: float | None = None, temperature: float | None = None) -> Defense:
    """UNMASK around ``base`` (``M``) with the part extractor ``K`` of the checkpoint ``extractor``, a network
    trained on part-annotated data (:func:`maskdefense.training.loop.train_on_part_data`): its record names the
    part vocabulary (``part_names``) and which parts each class has (``class_parts``), so the class-attribute
    matrix is built from ``classes``, the classifier's classes in its label order joined by ``+``
    (``classes=car+person+train``). ``area_threshold`` defaults to the one the extractor was validated with."""
    from ..checkpoint import load_model
    from ..data import attribute_matrix
    from .unmask import UNMASK

    if not isinstance(extractor, str) or not extractor:
        raise SpecError(f"extractor must be the path of a checkpoint, got {extractor!r}")
    net, meta = load_model(extractor)
    names, class_parts = meta.get("part_names"), meta.get("class_parts")
    if not names or not class_parts:
        raise SpecError(f"{extractor} does not record its part vocabulary and the parts of each class (part_names, "
                        "class_parts): train the extractor on part data whose description has class_parts")
    wanted = [str(c) for c in str(classes).split("+")]
    unknown = [c for c in wanted if c not in class_parts]
    if unknown:
        raise SpecError(f"unmask: classes {unknown} have no part set in {extractor}; known: {', '.join(class_parts)}")
    if area_threshold is None:
        area_threshold = float((meta.get("training_key") or {}).get("task", {}).get("area_threshold", 0.01))
    extra = {"temperature": temperature} if temperature is not None else {}
    return UNMASK(base, net.eval(), attribute_matrix(wanted, names, class_parts), mode=mode, threshold=threshold,
                  rule=rule, area_threshold=area_threshold, classes=wanted, parts=names, **extra)

def _smoothing(base: nn.Module, *, sigma: float, denoiser: str | None = None, **params: Any) -> Defense:
    from .smoothing import Smoothing

    return Smoothing(base, sigma, denoiser=_load(denoiser, "denoiser", "denoiser") if denoiser is not None else None,
                     **params)


DEFENSES.add("none", _none, "the undefended model")
DEFENSES.add("remix", _remix, "REMIX: optional reformer, random pixel partitions, inpainter "
             "(remix:inpainter=CKPT,n=3[,k=1,reformer=CKPT,n_grad=8,votes=1])")
DEFENSES.add("reformer", _reformer, "an autoencoder in front of the classifier, MagNet's reformer "
             "(reformer:reformer=CKPT; MagNet's detectors need calibration: see maskdefense.defenses.magnet)")
DEFENSES.add("squeeze", _squeeze, "image squeezers (ops.squeeze) before the classifier, BPDA for attacks: "
             "squeeze:method=bits,bits=5 | method=median,size=2 | method=nlmeans[,h=4,search=11,patch=3] | "
             "a chain method=bits+median (parameters go to the squeezers that take them)")
DEFENSES.add("tvm", _tvm, "random pixel dropout + total-variation reconstruction, EOT over n_grad draws "
             "(tvm:keep=0.5,weight=0.03[,n_grad=8,iters=100,per_channel=false])")
DEFENSES.add("sfm", _sfm, "SFM-Defense: a trained sparse feature masker, then squeezers (as squeeze:), then its "
             "classifier (sfm:masker=CKPT[,method=median,size=2,n_grad=8]; CKPT the masker's training run, the "
             "model its component 'classifier')")
DEFENSES.add("unmask", _unmask, "UNMASK: a part extractor's part set against the parts of the classifier's label, "
             "Jaccard distance d; detect rejects at d >= threshold, defend re-classifies by the parts "
             "(unmask:extractor=CKPT,classes=car+person+train[,mode=detect|defend,threshold=0.7,rule=max|min,"
             "area_threshold=..,temperature=..]; CKPT trained on part data, classes in the model's label order)")
DEFENSES.add("smoothing", _smoothing, "randomized smoothing (Cohen et al.), with a denoiser Denoised Smoothing "
             "(smoothing:sigma=0.25[,denoiser=CKPT,n=100,n0=100,alpha=0.001,n_grad=8]; CKPT a denoiser training "
             "run, its component 'denoiser')")
DEFENSES.add("mad", _mad, "MAD: random grid masking + majority vote (mad:cell=..,rate=..,n=..,n_grad=..,fill=..)")


def parse_defense_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"mad:cell=7,rate=0.75"`` -> ``("mad", {"cell": 7, "rate": 0.75})``."""
    return DEFENSES.parse_spec(text)


def build_defense(spec: str, base: nn.Module) -> Defense:
    """Build the defense ``spec`` around the (undefended, eval-mode) ``base`` model."""
    name, params = parse_defense_spec(spec)
    factory: Callable[..., Defense] = DEFENSES.entry(name).factory
    try:
        inspect.signature(factory).bind(base, **params)
    except TypeError as e:
        raise SpecError(f"defense {name}: {e}") from None
    try:
        return DEFENSES.create(name, base=base, **params)
    except TypeError as e:
        raise SpecError(f"defense {name}: {e}") from None
    except ValueError as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"defense {name}: {e}") from None


def create_defense(spec: str, base: nn.Module) -> Defense:
    """timm-style alias of :func:`build_defense`: ``create_defense("mad:cell=7,rate=0.75", model)``."""
    return build_defense(spec, base)


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.list(pattern)
