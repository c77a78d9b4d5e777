"""Metrics of a defense that may reject its input (a detector), from per-example records.

Conventions (stated in every report that uses them):

* the *positives* are the adversarial examples of the attacked images (the test images the base model
  classifies correctly), the *negatives* all clean test images;
* detection rate (true-positive rate) and false-positive rate *at the defense's threshold* come from the
  defense's own decisions (``predict`` returns ``REJECT`` = -1), averaged over the evaluation repeats;
* the ROC curve and its AUC come from the detector scores (``detect``; higher = more suspicious), over
  every threshold (scikit-learn's ``roc_curve`` / ``roc_auc_score``);
* accuracy under two conventions: a rejected adversarial input counted as *defended* (the attack
  succeeds only when the example is misclassified and not rejected), or counted as *failed*. A
  rejected clean input is an error under both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...defenses.base import REJECT

__all__ = ["roc", "detection_metrics"]


def _r(v: float) -> float:
    return round(float(v), 6)


def roc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> dict[str, Any] | None:
    """ROC of the detector separating adversarial (positive) from clean (negative) inputs by score:
    ``{"auc", "fpr", "tpr", "thresholds"}`` (the first threshold, +inf, is written as ``None``), or
    ``None`` when either class is empty or a score is not finite."""
    from sklearn.metrics import roc_auc_score, roc_curve

    clean = np.asarray(clean_scores, dtype=np.float64).ravel()
    adv = np.asarray(adv_scores, dtype=np.float64).ravel()
    if clean.size == 0 or adv.size == 0 or not (np.isfinite(clean).all() and np.isfinite(adv).all()):
        return None
    truth = np.concatenate([np.zeros(clean.size, dtype=np.int64), np.ones(adv.size, dtype=np.int64)])
    scores = np.concatenate([clean, adv])
    fpr, tpr, thr = roc_curve(truth, scores)
    return {"auc": _r(roc_auc_score(truth, scores)), "fpr": [_r(v) for v in fpr], "tpr": [_r(v) for v in tpr],
            "thresholds": [None if not math.isfinite(v) else _r(v) for v in thr]}


def detection_metrics(labels: np.ndarray, clean_ok: np.ndarray, adv_pred: np.ndarray, attacked: np.ndarray,
                      clean_scores: np.ndarray, adv_scores: np.ndarray, reject: int = REJECT) -> dict[str, Any]:
    """Detector metrics of one (threat, attack) row.

    labels : ``(m,)`` true labels of the row's images.
    clean_ok : ``(m, R)`` the defense is right on the clean image (per repeat; a rejection is wrong).
    adv_pred : ``(m, R)`` the defense's predictions on the adversarial examples (``reject`` = rejected).
    attacked : ``(m,)`` the image counts in the protocol (the base model classifies it correctly).
    clean_scores : detector scores of the clean images (the negatives, all test images).
    adv_scores : ``(m,)`` detector scores of the adversarial examples.

    Returns the protocol accuracy (over ``attacked``) and the robust accuracy (over all ``m``; clean and
    adversarial right) with a rejection counted as *failed*, as means over the repeats (the row's own
    ``defense_acc`` and ``robust_acc`` count it as defended), the detection rate at the threshold and the
    ROC (see the module docstring).
    """
    rejected = adv_pred == reject
    right = adv_pred == labels[:, None]
    n_att = int(attacked.sum())

    def mean(v: np.ndarray) -> float | None:
        return _r(v.mean()) if v.size else None

    curve = roc(clean_scores, adv_scores[attacked])
    return {
        "defense_acc_rejected_failed": mean(right[attacked]) if n_att else None,
        "robust_acc_rejected_failed": mean(clean_ok & right),
        "detection_rate": mean(rejected[attacked]) if n_att else None,
        "detection_auc": curve["auc"] if curve else None,
        "roc": curve,
    }
