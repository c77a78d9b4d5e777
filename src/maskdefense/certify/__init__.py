"""Certified robustness against patch attacks for any classifier of the library: derandomized smoothing
(:mod:`.derandomized`), PatchCleanser (:mod:`.patchcleanser`) and a certificate for MAD's grid masks
(:mod:`.grid`), behind one interface (:mod:`.base`: ``predict``, ``certify`` -> :class:`Certificate`) and
one spec syntax (:mod:`.registry`).

>>> from maskdefense.certify import build_certifier
>>> ds = build_certifier("ds:mode=column,band=4", model).eval()
>>> cert = ds.certify(images, patch_sizes=(2, 5))
>>> cert.decision, cert.at(5)          # decisions, certified against 5x5 patches
"""

from __future__ import annotations

from .base import Certificate, Certifier, affected_copies, location_margins
from .derandomized import DerandomizedSmoothing
from .grid import GridCertifier, feasibility, largest_certifiable, unaffected_fraction
from .patchcleanser import PatchCleanser, double_masking
from .registry import CERTIFIERS, build_certifier, parse_certifier_spec

__all__ = [
    "Certificate", "Certifier", "affected_copies", "location_margins", "DerandomizedSmoothing", "GridCertifier",
    "feasibility", "largest_certifiable", "unaffected_fraction", "PatchCleanser", "double_masking", "CERTIFIERS",
    "build_certifier", "parse_certifier_spec",
]
