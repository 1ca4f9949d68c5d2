"""Classification metrics in pure NumPy, recorded with every model version on the evaluation set.

Conventions (checked against ``sklearn.metrics`` in the tests):

- classes are ``0..n_classes-1``; a class absent from ``y_true`` has recall ``nan`` and is left out of the
  balanced accuracy (sklearn's behaviour, with its warning turned into a documented rule);
- macro-F1 averages over classes present in ``y_true`` or ``y_pred`` (sklearn's ``labels=None`` default);
- expected calibration error uses equal-width confidence bins (Guo et al. 2017, https://arxiv.org/abs/1706.04599).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mltasks.core.errors import ShapeError


def _labels(y: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """Counts ``C[i, j]`` of items of true class i predicted as j; shape (n_classes, n_classes)."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ShapeError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    return float(np.mean(t == p)) if t.size else math.nan


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.float64]:
    """Recall of each class, shape (n_classes,); ``nan`` for a class with no true item."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_true``."""
    rec = per_class_recall(y_true, y_pred, n_classes)
    present = ~np.isnan(rec)
    return float(rec[present].mean()) if present.any() else math.nan


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> float:
    """Unweighted mean F1 over classes present in ``y_true`` or ``y_pred``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    true_n, pred_n = cm.sum(axis=1), cm.sum(axis=0)
    present = (true_n + pred_n) > 0
    if not present.any():
        return math.nan
    f1 = np.where(true_n + pred_n > 0, 2 * tp / np.maximum(true_n + pred_n, 1), 0.0)
    return float(f1[present].mean())


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over equal-width bins of the top-class confidence."""
    p = np.asarray(probs, dtype=np.float64)
    t = _labels(y_true, "y_true")
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ShapeError(f"probs must be (n, k) with n = len(y_true); got {p.shape} and {t.shape}")
    if t.size == 0:
        return math.nan
    conf = p.max(axis=1)  # (n,)
    correct = (p.argmax(axis=1) == t).astype(np.float64)  # (n,)
    # Bin i holds conf in (i/n_bins, (i+1)/n_bins]; conf == 0 goes to the first bin.
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(bins, conf, minlength=n_bins))
    return float(gap.sum() / t.size) if count.sum() else math.nan


def log_loss(probs: ArrayLike, y_true: ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class."""
    p = np.asarray(probs, dtype=np.float64)
    t = _labels(y_true, "y_true")
    if t.size == 0:
        return math.nan
    return float(-np.mean(np.log(np.clip(p[np.arange(t.size), t], eps, 1.0))))


def _finite_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def evaluate(probs: ArrayLike, y_true: ArrayLike, n_classes: int) -> dict[str, Any]:
    """Every metric of a model version on one labeled set, as a JSON-serialisable dict.

    probs: (n, n_classes) predicted probabilities; y_true: (n,) ints. ``nan`` values become ``None`` (JSON null).
    Keys: n, accuracy, balanced_accuracy, macro_f1, worst_class_recall, per_class_recall (list, None for a class
    with no true item), ece, nll, confusion (list of lists, rows = true class).
    """
    p = np.asarray(probs, dtype=np.float64)
    t = _labels(y_true, "y_true")
    if p.ndim != 2 or p.shape != (t.shape[0], n_classes):
        raise ShapeError(f"probs must be ({t.shape[0]}, {n_classes}), got {p.shape}")
    pred = p.argmax(axis=1) if t.size else np.zeros(0, dtype=np.int64)
    rec = per_class_recall(t, pred, n_classes)
    present = rec[~np.isnan(rec)]
    return {
        "n": int(t.size),
        "accuracy": _finite_or_none(accuracy(t, pred)),
        "balanced_accuracy": _finite_or_none(balanced_accuracy(t, pred, n_classes)),
        "macro_f1": _finite_or_none(macro_f1(t, pred, n_classes)),
        "worst_class_recall": float(present.min()) if present.size else None,
        "per_class_recall": [_finite_or_none(float(r)) for r in rec],
        "ece": _finite_or_none(expected_calibration_error(p, t)),
        "nll": _finite_or_none(log_loss(p, t)),
        "confusion": confusion_matrix(t, pred, n_classes).tolist(),
    }
