"""Training tasks (see :mod:`.base` for the protocol): classification, adversarial training, reconstruction
(denoising / inpainting autoencoders), part segmentation (a part extractor), networks in alternation (a sparse
feature masker and its classifier: :mod:`.sfm`), a network trained through a frozen one, and the task of a
classifier preset (:mod:`.factory`)."""

from .adversarial import AdversarialTask, pgd_linf
from .alternating import AlternatingTask
from .base import Hook, Task, describe, make_optimizer
from .classify import ClassificationTask
from .factory import TASK_NAMES, make_task
from .frozen import DenoiserTask
from .reconstruct import ReconstructionTask
from .segment import SegmentationTask, segmentation_metrics
from .sfm import SparseMaskTask, sparse_mask_loss

__all__ = ["Task", "Hook", "describe", "make_optimizer", "ClassificationTask", "AdversarialTask", "pgd_linf",
           "ReconstructionTask", "SegmentationTask", "segmentation_metrics", "AlternatingTask", "DenoiserTask",
           "make_task", "TASK_NAMES",
           "SparseMaskTask", "sparse_mask_loss"]
