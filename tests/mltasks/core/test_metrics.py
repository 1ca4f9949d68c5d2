"""metrics.py against sklearn.metrics on random and degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mltasks.core.errors import ShapeError
from mltasks.core.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    macro_f1,
    per_class_recall,
)


def _random_case(rng: np.random.Generator, n: int = 500, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logits = rng.normal(size=(n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, k, size=n)
    return probs, y, probs.argmax(axis=1)


def test_against_sklearn(rng: np.random.Generator) -> None:
    probs, y, pred = _random_case(rng)
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy(y, pred, 5) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert macro_f1(y, pred, 5) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_allclose(per_class_recall(y, pred, 5), skm.recall_score(y, pred, average=None))
    np.testing.assert_array_equal(confusion_matrix(y, pred, 5), skm.confusion_matrix(y, pred, labels=range(5)))


def test_missing_class_is_nan_and_left_out_of_balanced_accuracy() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 2])
    rec = per_class_recall(y, pred, 4)
    assert rec[:2].tolist() == [0.5, 0.5] and math.isnan(rec[2]) and math.isnan(rec[3])
    assert balanced_accuracy(y, pred, 4) == pytest.approx(0.5)
    # sklearn averages F1 over labels present in y_true or y_pred: {0, 1, 2}
    assert macro_f1(y, pred, 4) == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_ece_known_answers() -> None:
    # Perfectly confident and right: ECE 0. Confident 0.9 and right 50%: ECE 0.4.
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(np.eye(2)[y], y) == pytest.approx(0.0)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert expected_calibration_error(probs, np.array([0, 1, 1, 0])) == pytest.approx(0.4)


def test_ece_matches_a_loop_reference(rng: np.random.Generator) -> None:
    probs, y, pred = _random_case(rng, n=1000)
    conf = probs.max(axis=1)
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ref += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    assert expected_calibration_error(probs, y) == pytest.approx(ref)


def test_evaluate_is_json_serialisable(rng: np.random.Generator) -> None:
    probs, y, _ = _random_case(rng, n=50, k=4)
    y[y == 3] = 0  # class 3 has no true item: its recall is null
    report = evaluate(probs, y, 4)
    assert json.loads(json.dumps(report)) == report
    assert report["per_class_recall"][3] is None
    assert report["n"] == 50 and len(report["confusion"]) == 4
    assert report["worst_class_recall"] == min(r for r in report["per_class_recall"] if r is not None)


def test_evaluate_empty_and_bad_shapes() -> None:
    report = evaluate(np.zeros((0, 3)), np.zeros(0, dtype=int), 3)
    assert report["n"] == 0 and report["accuracy"] is None
    with pytest.raises(ShapeError):
        evaluate(np.zeros((4, 2)), np.zeros(4, dtype=int), 3)
