"""Prototype conformity loss (Mustafa, Khan, Hayat, Goecke, Shen and Shao: "Adversarial Defense by Restricting
the Hidden Space of Deep Neural Networks", ICCV 2019): learned class centres ("prototypes") in a hidden feature
space; the loss pulls each feature vector to its own class's centre and pushes it from the centres of the other
classes, so that the classes occupy separated regions and a small perturbation cannot carry a feature into
another class's region.

The paper's Eq. 4 writes the terms with Euclidean distances and one set of centres; the authors' code
(aamir-mustafa/pcl-adversarial-defense, ``proximity.py``, ``contrastive_proximity.py``, ``pcl_training.py``),
which MAD's comparison ran, differs, and is what is implemented here:

* squared distances, clamped to ``[1e-12, 1e12]``; *proximity* = the mean over the batch of
  ``||f_i - c_{y_i}||^2``; *contrastive proximity* = the mean over the batch and the other classes ``j != y_i``
  of ``||f_i - c'_j||^2``, with a **second** set of centres ``c'``;
* loss = cross-entropy + ``weight_prox * prox - weight_conprox * conprox`` (weights 1 and 1e-4), summed over the
  feature layers (the code: the 256-d pooled features and the 1024-d output of a fully connected layer it adds
  before the classifier of its ResNet-110);
* centres drawn from N(0, 1); their own SGD optimizers (lr 0.5 and 1e-4, the model's: 0.01) step on gradients
  rescaled by ``1 / weight``;
* the network is first trained with cross-entropy alone, then fine-tuned with PCL (no adversarial examples in
  ``pcl_training.py``, as in MAD's comparison).

Here too the centres have their own plain SGD steps at the reference's learning rates (``centre_lr``, on
gradients rescaled by ``1 / weight``), outside the task's optimizer and schedule: they are tensors that require
gradients but are buffers, not parameters (saved with the module, never seen by the model's optimizer), and
:meth:`PrototypeConformity.update_centres`, a post-step hook, steps them. The features are the outputs of named
modules of the model (flattened), captured by forward hooks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["PrototypeConformity", "pcl_terms"]


def pcl_terms(features: Tensor, labels: Tensor, centres: Tensor, con_centres: Tensor) -> tuple[Tensor, Tensor]:
    """``(prox, conprox)`` of the module docstring for features ``(N, D)``, labels ``(N,)`` and centres
    ``(K, D)`` (own-class pull) and ``con_centres`` ``(K, D)`` (other-class push)."""
    f = features.float()

    def sq_dist(c: Tensor) -> Tensor:
        return (f[:, None, :] - c[None, :, :].float()).pow(2).sum(-1).clamp(1e-12, 1e12)  # (N, K)

    own = torch.zeros(f.shape[0], centres.shape[0], dtype=torch.bool, device=f.device)
    own[torch.arange(f.shape[0], device=f.device), labels] = True
    return sq_dist(centres)[own].mean(), sq_dist(con_centres)[~own].mean()


class PrototypeConformity(nn.Module):
    """The PCL term for :class:`~maskdefense.training.tasks.ClassificationTask`'s ``extra`` (see the module
    docstring): ``extra(images, logits, labels)`` on the features the model's last forward produced at
    ``layers`` (module name -> feature dimension, e.g. ``{"features": 256}``: VGG16/2's pooled features, the
    input of its linear classifier). The model is not a sub-module (it is saved as the task's ``"model"``); the
    task must also run :meth:`update_centres` after every step (``hooks=[pcl.update_centres]``)."""

    def __init__(self, model: nn.Module, layers: Mapping[str, int], num_classes: int, *, weight_prox: float = 1.0,
                 weight_conprox: float = 1e-4, centre_lr: Sequence[float] = (0.5, 1e-4)) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PCL needs at least one feature layer")
        if not (weight_prox > 0 and weight_conprox > 0 and len(centre_lr) == 2 and all(r >= 0 for r in centre_lr)):
            raise ValueError("weight_prox and weight_conprox must be > 0, centre_lr two numbers >= 0")
        self.layers = {str(k): int(v) for k, v in layers.items()}
        self.num_classes = int(num_classes)
        self.weight_prox, self.weight_conprox = float(weight_prox), float(weight_conprox)
        self.centre_lr = (float(centre_lr[0]), float(centre_lr[1]))
        self._key = {name: name.replace(".", "_") for name in self.layers}
        for name, d in self.layers.items():
            for kind in ("centres", "con_centres"):
                self.register_buffer(f"{kind}_{self._key[name]}", torch.randn(num_classes, d).requires_grad_(True))
        self._features: dict[str, Tensor] = {}
        for name in self.layers:
            model.get_submodule(name).register_forward_hook(self._capture(name))

    def _capture(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            self._features[name] = output.flatten(1).clone()  # before an in-place activation changes it
        return hook

    def centres(self, layer: str) -> tuple[Tensor, Tensor]:
        """The (prox, con-prox) centres ``(K, D)`` of feature layer ``layer``."""
        key = self._key[layer]
        return getattr(self, f"centres_{key}"), getattr(self, f"con_centres_{key}")

    @torch.no_grad()
    def update_centres(self, task: Any = None, phase: str = "") -> None:
        """One SGD step of every centre on its gradient rescaled by ``1 / weight``, at ``centre_lr``; clears the
        gradients (a post-step hook; the reference's centre optimizers)."""
        for name in self.layers:
            for c, lr, w in zip(self.centres(name), self.centre_lr, (self.weight_prox, self.weight_conprox)):
                if c.grad is not None:
                    c.sub_(c.grad, alpha=lr / w)
                    c.grad = None

    def forward(self, x: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for name, dim in self.layers.items():
            f = self._features.get(name)
            if f is None or f.shape[0] != labels.shape[0] or f.shape[1] != dim:
                raise RuntimeError(f"PCL: no {dim}-d features of layer {name!r} for this batch (got "
                                   f"{None if f is None else tuple(f.shape)})")
            prox, conprox = pcl_terms(f, labels, *self.centres(name))
            total = total + self.weight_prox * prox - self.weight_conprox * conprox
        return total

    def config(self) -> dict[str, Any]:
        return {"extra": "prototype_conformity", "layers": self.layers, "num_classes": self.num_classes,
                "weight_prox": self.weight_prox, "weight_conprox": self.weight_conprox,
                "centre_lr": list(self.centre_lr)}
