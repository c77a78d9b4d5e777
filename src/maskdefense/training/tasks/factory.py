"""A classifier's training task from its plain-data description (a preset's ``task`` field, recorded in the
training key): ``None`` is cross-entropy (:class:`ClassificationTask`), else ``{"name": ..., **options}``:

* ``"adversarial"``: :class:`AdversarialTask` (``eps``, ``steps``, ``mode``, ``alpha``, ``random_start``): PGD
  adversarial training (Madry et al.);
* ``"parseval"``: cross-entropy with the :class:`~maskdefense.training.hooks.ParsevalRetraction` after every step
  (``beta``, ``conv_scaling``): Parseval networks (Cisse et al.);
* ``"pcl"``: cross-entropy plus the :class:`~maskdefense.training.pcl.PrototypeConformity` term (``layers``,
  ``weight_prox``, ``weight_conprox``, ``centre_lr``; its centre update runs as a post-step hook): PCL (Mustafa
  et al.).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..hooks import ParsevalRetraction
from ..pcl import PrototypeConformity
from ..transforms import Transform
from .adversarial import AdversarialTask
from .classify import ClassificationTask

__all__ = ["make_task", "TASK_NAMES"]

TASK_NAMES = ("adversarial", "parseval", "pcl")


def make_task(model: nn.Module, spec: Mapping[str, Any] | None, *, transform: Transform | None = None,
              num_classes: int = 10) -> ClassificationTask:
    """The task ``spec`` describes (see the module docstring) training ``model``; unknown names or options are
    refused with a ``ValueError``."""
    if spec is None:
        return ClassificationTask(model, transform=transform)
    options = dict(spec)
    name = options.pop("name", None)
    try:
        if name == "adversarial":
            return AdversarialTask(model, transform=transform, **options)
        if name == "parseval":
            return ClassificationTask(model, transform=transform, hooks=[ParsevalRetraction(**options)])
        if name == "pcl":
            pcl = PrototypeConformity(model, num_classes=num_classes, **options)
            return ClassificationTask(model, transform=transform, extra=pcl, hooks=[pcl.update_centres])
    except TypeError as e:
        raise ValueError(f"task {name!r}: {e}") from None
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)} (or none: cross-entropy)")
