"""Shared operators: masks, pixel partitions, image squeezers, votes, BPDA, EOT, part sets (no training, no
defenses). Defenses compose these."""

from .bpda import BPDA, bpda
from .eot import EOT, log_mean_softmax
from .masking import GridMask, apply_mask, enumerate_masks, grid_mask
from .parts import jaccard_distance, jaccard_similarity, part_areas, parts_present, soft_parts_present
from .partition import PartitionMask, mask_copies, partition_masks, recombine
from .squeeze import SQUEEZERS, Squeezer, create_squeezer, create_squeezers, list_squeezers
from .threshold import threshold_at_fpr
from .vote import count_votes, top_class

__all__ = ["BPDA", "bpda", "EOT", "log_mean_softmax", "GridMask", "apply_mask", "enumerate_masks", "grid_mask",
           "PartitionMask", "mask_copies", "partition_masks", "recombine", "SQUEEZERS", "Squeezer", "create_squeezer",
           "create_squeezers", "list_squeezers", "count_votes", "top_class", "threshold_at_fpr", "part_areas",
           "parts_present", "soft_parts_present", "jaccard_similarity", "jaccard_distance"]
