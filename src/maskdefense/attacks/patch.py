"""An adaptive patch attack on a certifier's decision: the empirical check of a certificate's soundness.

For each image and each of ``locations`` patch positions (the ones the certificate finds weakest,
:meth:`~maskdefense.certify.base.Certifier.weak_locations`, or every position), the ``p x p`` patch's
pixels are optimised by PGD (sign steps of ``step_size``, kept in ``[0, 1]``, a uniform random start) to
maximise the cross-entropy of the certifier's clean decision under its differentiable surrogate (the log of
the mean softmax over its masked copies, ``certifier(x)``); after the steps the certifier's actual decision
(``predict``) on the patched image is compared with the clean one. An image is *broken* when some location
changes it. A sound certificate is never broken; the uncertified images it breaks show the attack works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ..certify.base import Certifier
from ..ops.ablation import patch_locations, patch_mask
from ..seeding import uniform
from ..validation import check_images, positive_int

__all__ = ["PatchAttackResult", "patch_attack"]


@dataclass
class PatchAttackResult:
    """decision / decision_adv : ``(N,)`` clean and attacked decisions; broken : ``(N,)`` bool, some
    location changed the decision; location : ``(N, 2)`` the location that did (else the last tried);
    x_adv : ``(N, C, H, W)`` the patched image at that location; locations_tried : per image."""

    decision: Tensor
    decision_adv: Tensor
    broken: Tensor
    location: Tensor
    x_adv: Tensor
    locations_tried: int


def _apply(x: Tensor, pm: Tensor, content: Tensor) -> Tensor:
    return x * (1 - pm) + content * pm


def patch_attack(certifier: Certifier, x: Tensor, patch: int, *, locations: int | str = 8, steps: int = 20,
                 step_size: float = 0.1, generator: torch.Generator | None = None) -> PatchAttackResult:
    """Attack ``certifier``'s decision on ``x`` with one ``patch x patch`` patch (see the module docstring).

    locations : how many of the weakest locations per image to attack, or ``"all"``; steps, step_size :
    PGD on the patch pixels; generator : the random start."""
    check_images(x)
    steps = positive_int(steps, "steps")
    certifier.eval()
    n, _, h, w = x.shape
    if locations == "all":
        locs = patch_locations((h, w), patch).unsqueeze(0).expand(n, -1, -1)
    else:
        locs = certifier.weak_locations(x, patch, positive_int(locations, "locations")).cpu()
    decision = certifier.predict(x)
    decision_adv = decision.clone()
    broken = torch.zeros(n, dtype=torch.bool)
    location = locs[:, -1].clone()
    x_adv = x.detach().clone()
    for j in range(locs.shape[1]):
        active = torch.nonzero(~broken).flatten()
        if active.numel() == 0:
            break
        xa, ya = x[active].detach(), decision[active]
        pm = patch_mask((h, w), patch, locs[active, j]).to(xa.device, xa.dtype)
        content = uniform(tuple(xa.shape), generator, xa.device).to(xa.dtype)
        for _ in range(steps):
            content.requires_grad_(True)
            loss = F.cross_entropy(certifier(_apply(xa, pm, content)), ya.clamp_min(0))
            grad, = torch.autograd.grad(loss, content)
            content = (content.detach() + step_size * grad.sign()).clamp(0.0, 1.0)
        patched = _apply(xa, pm, content.detach())
        pred = certifier.predict(patched)
        hit = pred.cpu() != ya.cpu()
        idx = active[hit]
        broken[idx] = True
        decision_adv[idx] = pred[hit.to(pred.device)]
        location[idx] = locs[idx, j]
        x_adv[idx] = patched[hit.to(patched.device)]
    return PatchAttackResult(decision, decision_adv, broken, location, x_adv, int(locs.shape[1]))
