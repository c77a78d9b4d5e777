"""Training tasks (see :mod:`.base` for the protocol): classification, adversarial training, reconstruction
(denoising / inpainting autoencoders), networks in alternation, and a network trained through a frozen one."""

from .adversarial import AdversarialTask, pgd_linf
from .alternating import AlternatingTask
from .base import Hook, Task, describe, make_optimizer
from .classify import ClassificationTask
from .frozen import DenoiserTask
from .reconstruct import ReconstructionTask

__all__ = ["Task", "Hook", "describe", "make_optimizer", "ClassificationTask", "AdversarialTask", "pgd_linf",
           "ReconstructionTask", "AlternatingTask", "DenoiserTask"]
