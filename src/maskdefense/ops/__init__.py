"""Shared operators: masks, BPDA, EOT (no training, no defenses). Defenses compose these."""

from .bpda import BPDA, bpda
from .eot import EOT, log_mean_softmax
from .masking import GridMask, apply_mask, enumerate_masks, grid_mask

__all__ = ["BPDA", "bpda", "EOT", "log_mean_softmax", "GridMask", "apply_mask", "enumerate_masks", "grid_mask"]
