"""Agreement statistics against textbook values and reference implementations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from mltasks.core.agreement import (
    AgreementError,
    agreement_report,
    bootstrap_ci,
    cohen_kappa,
    cohen_kappa_matrix,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)
from mltasks.core.answers import AnswerTable

# Wikipedia's Fleiss' kappa example: 10 subjects, 14 raters, 5 categories -> kappa 0.210, P = 0.378.
FLEISS_WIKIPEDIA = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units,
# values 1-5, None = missing. Nominal alpha = 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


@pytest.fixture(autouse=True)
def _private_media() -> None:
    """Pure-NumPy tests: override tests/conftest.py's Django media fixture (runs with -p no:django)."""


def _from_counts(counts: np.ndarray) -> AnswerTable:
    """Long-format table from an (items, classes) count matrix, distinct rater ids per item."""
    item, annotator, label = [], [], []
    for i, row in enumerate(counts):
        a = 0
        for c, n in enumerate(row):
            for _ in range(int(n)):
                item.append(i)
                annotator.append(a)
                label.append(c)
                a += 1
    return AnswerTable.from_arrays(item, annotator, label, n_classes=counts.shape[1])


def _from_matrix(data: list[list[int | None]]) -> AnswerTable:
    """Rows = observers, columns = units; None is missing."""
    item, annotator, label = [], [], []
    for o, row in enumerate(data):
        for u, v in enumerate(row):
            if v is not None:
                item.append(u)
                annotator.append(o)
                label.append(v)
    return AnswerTable.from_ids(item, annotator, label)[0]


def _random_table(rng: np.random.Generator, n_items: int, n_annotators: int, k: int, p_missing: float) -> AnswerTable:
    truth = rng.integers(0, k, n_items)
    item = np.repeat(np.arange(n_items), n_annotators)
    annotator = np.tile(np.arange(n_annotators), n_items)
    acc = np.linspace(0.9, 0.5, n_annotators)[annotator]
    label = np.where(rng.random(item.size) < acc, truth[item], rng.integers(0, k, item.size))
    keep = rng.random(item.size) >= p_missing
    return AnswerTable.from_arrays(item[keep], annotator[keep], label[keep], n_items=n_items, n_classes=k)


def test_fleiss_kappa_wikipedia_example() -> None:
    table = _from_counts(FLEISS_WIKIPEDIA)
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert percent_agreement(table) == pytest.approx(0.378, abs=5e-4)
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(FLEISS_WIKIPEDIA, method="fleiss"), abs=1e-12)


def test_fleiss_kappa_matches_statsmodels_on_random_data() -> None:
    rng = np.random.default_rng(1)
    for k in (2, 3, 6):
        table = _random_table(rng, 200, 5, k, p_missing=0.0)
        counts = np.bincount(table.item * k + table.label, minlength=200 * k).reshape(200, k)
        assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(counts, method="fleiss"), abs=1e-12)


def test_krippendorff_alpha_canonical_example() -> None:
    assert krippendorff_alpha(_from_matrix(KRIPPENDORFF_2011)) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_matches_a_pairwise_loop() -> None:
    """Coincidence-matrix definition, computed with explicit loops over units and value pairs."""
    rng = np.random.default_rng(2)
    table = _random_table(rng, 60, 4, 3, p_missing=0.4)
    k = table.n_classes
    o = np.zeros((k, k))
    for u in range(table.n_items):
        vals = table.label[table.item == u]
        m = vals.size
        if m < 2:
            continue
        for x in range(m):
            for y in range(m):
                if x != y:
                    o[vals[x], vals[y]] += 1.0 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d_o = (o.sum() - np.trace(o)) / n
    d_e = (n * n - (n_c**2).sum()) / (n * (n - 1))
    assert krippendorff_alpha(table) == pytest.approx(1 - d_o / d_e, abs=1e-12)


def test_cohen_kappa_matrix_matches_sklearn_with_missing_answers() -> None:
    rng = np.random.default_rng(3)
    table = _random_table(rng, 120, 4, 3, p_missing=0.3)
    result = cohen_kappa_matrix(table)
    dense = np.full((4, table.n_items), -1)
    dense[table.annotator, table.item] = table.label
    for a in range(4):
        assert math.isnan(result.kappa[a, a])
        for b in range(a + 1, 4):
            both = (dense[a] >= 0) & (dense[b] >= 0)
            assert result.n_shared[a, b] == result.n_shared[b, a] == both.sum()
            expected = cohen_kappa_score(dense[a, both], dense[b, both])
            assert result.kappa[a, b] == pytest.approx(expected, abs=1e-12)
            assert result.kappa[b, a] == result.kappa[a, b]
            assert cohen_kappa(dense[a, both], dense[b, both]) == pytest.approx(expected, abs=1e-12)


def test_duplicate_answers_keep_the_last() -> None:
    table = AnswerTable.from_arrays([0, 0, 0, 1, 1], [0, 1, 1, 0, 1], [0, 1, 0, 1, 1])
    assert percent_agreement(table) == 1.0  # annotator 1 changed its answer on item 0 to agree


def test_degenerate_cases_return_nan() -> None:
    everyone_agrees_on_one_class = AnswerTable.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [2, 2, 2, 2], n_classes=3)
    assert percent_agreement(everyone_agrees_on_one_class) == 1.0
    assert math.isnan(fleiss_kappa(everyone_agrees_on_one_class))  # expected agreement 1
    assert math.isnan(krippendorff_alpha(everyone_agrees_on_one_class))
    assert math.isnan(cohen_kappa_matrix(everyone_agrees_on_one_class).kappa[0, 1])
    one_rater_per_item = AnswerTable.from_arrays([0, 1, 2], [0, 1, 0], [0, 1, 1])
    for statistic in (percent_agreement, fleiss_kappa, krippendorff_alpha):
        assert math.isnan(statistic(one_rater_per_item))
    empty = AnswerTable.from_arrays([], [], [])
    assert math.isnan(fleiss_kappa(empty)) and cohen_kappa_matrix(empty).kappa.shape == (0, 0)
    few = AnswerTable.from_arrays([0, 0], [0, 1], [0, 1], n_classes=2)
    assert math.isnan(cohen_kappa_matrix(few, min_shared=2).kappa[0, 1])
    assert math.isnan(cohen_kappa([], []))


def test_bootstrap_ci_contains_the_point_and_is_deterministic() -> None:
    table = _random_table(np.random.default_rng(4), 300, 4, 3, p_missing=0.2)
    for statistic in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "cohen_kappa_mean"):
        point, lo, hi = bootstrap_ci(table, statistic, rng=np.random.default_rng(7), n_boot=300)
        assert lo < point < hi
        again = bootstrap_ci(table, statistic, rng=np.random.default_rng(7), n_boot=300)
        assert again == (point, lo, hi)
        other = bootstrap_ci(table, statistic, rng=np.random.default_rng(8), n_boot=300)
        assert other[1:] != (lo, hi)
    with pytest.raises(AgreementError):
        bootstrap_ci(table, "fleiss_kappa", rng=np.random.default_rng(0), level=1.5)
    with pytest.raises(AgreementError):
        bootstrap_ci(table, "nonsense", rng=np.random.default_rng(0))


def test_report_per_project_and_per_class_is_json() -> None:
    table = _from_matrix(KRIPPENDORFF_2011)
    report = agreement_report(table, n_boot=200, rng=np.random.default_rng(0))
    json.dumps(report, allow_nan=False)
    assert report["project"]["krippendorff_alpha"]["value"] == pytest.approx(0.743, abs=5e-4)
    assert report["n_pairable_items"] == 11 and len(report["per_class"]) == 5
    project = report["project"]["fleiss_kappa"]
    assert project["ci_low"] <= project["value"] <= project["ci_high"]
    # Per class = the same statistic on labels binarised one-vs-rest.
    c = 2
    binary = AnswerTable.from_arrays(table.item, table.annotator, (table.label == c).astype(int), n_classes=2)
    assert report["per_class"][c]["fleiss_kappa"]["value"] == pytest.approx(fleiss_kappa(binary), abs=1e-6)
    pair = next(p for p in report["pairwise"] if (p["a"], p["b"]) == (0, 1))
    assert pair["n_shared"] == 9
    assert report == agreement_report(table, n_boot=200, rng=np.random.default_rng(0))


def test_report_on_empty_and_degenerate_tables() -> None:
    empty = agreement_report(AnswerTable.from_arrays([], [], []), n_boot=10, rng=np.random.default_rng(0))
    json.dumps(empty, allow_nan=False)
    assert empty["project"]["fleiss_kappa"] == {"value": None, "ci_low": None, "ci_high": None}
    same = AnswerTable.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 1], n_classes=2)
    report = agreement_report(same, n_boot=50, rng=np.random.default_rng(0))
    json.dumps(report, allow_nan=False)
    assert report["project"]["percent_agreement"]["value"] == 1.0
    assert report["project"]["fleiss_kappa"]["value"] is None
    with pytest.raises(AgreementError):
        agreement_report(same, n_boot=10, rng=0)  # type: ignore[arg-type]
