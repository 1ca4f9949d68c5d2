"""Aggregators on hand-made cases with known answers, and against a loop-based reference EM."""

from __future__ import annotations

import numpy as np
import pytest

from mltasks.core.answers import AnswerTable, AnswerTableError
from mltasks.core.consensus import (
    MACE,
    DawidSkene,
    GoldError,
    MajorityVote,
    NotFittedError,
    OneCoinDawidSkene,
    annotator_confusion,
)

ALL = [MajorityVote, DawidSkene, OneCoinDawidSkene, MACE]
EM = [DawidSkene, OneCoinDawidSkene, MACE]
A, B, C = 0, 1, 2


@pytest.fixture(autouse=True)
def _private_media() -> None:
    """Pure-NumPy tests: override tests/conftest.py's Django media fixture (runs with -p no:django)."""


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _table(rows: list[tuple[int, int, int]], **sizes: int) -> AnswerTable:
    item, annotator, label = zip(*rows, strict=True) if rows else ((), (), ())
    return AnswerTable.from_arrays(item, annotator, label, **sizes)


def _simulate(
    rng: np.random.Generator, n_items: int, confusions: np.ndarray, per_item: int, priors: np.ndarray
) -> tuple[AnswerTable, np.ndarray]:
    """Each item answered by ``per_item`` distinct annotators drawn at random."""
    n_a, k, _ = confusions.shape
    truth = rng.choice(k, size=n_items, p=priors)
    who = np.argsort(rng.random((n_items, n_a)), axis=1)[:, :per_item]  # (n_items, per_item)
    item = np.repeat(np.arange(n_items), per_item)
    annotator = who.ravel()
    cum = confusions[annotator, truth[item]].cumsum(axis=1)  # (n, k)
    label = (rng.random(item.size)[:, None] > cum).sum(axis=1)
    return AnswerTable.from_arrays(item, annotator, label, n_items=n_items, n_annotators=n_a, n_classes=k), truth


# ------------------------------------------------------------------ answer table


def test_from_ids_maps_ids_and_sorts_classes() -> None:
    table, maps = AnswerTable.from_ids(["x", "y", "x"], ["ann1", "ann2", "ann2"], ["dog", "cat", "dog"])
    assert maps.classes == ("cat", "dog")
    assert maps.items == ("x", "y")
    assert table.n_items == 2 and table.n_annotators == 2 and table.n_classes == 2
    assert table.label.tolist() == [1, 0, 1]
    assert maps.gold_indices({"y": "dog", "unknown": "cat"}) == {1: 1}


def test_from_ids_with_fixed_classes_and_unanswered_items() -> None:
    table, maps = AnswerTable.from_ids([10], ["a"], ["b"], classes=["c", "b", "a"], all_items=[5, 10, 20])
    assert maps.classes == ("c", "b", "a") and table.label.tolist() == [1]
    assert maps.items == (5, 10, 20) and table.item.tolist() == [1]
    with pytest.raises(AnswerTableError):
        AnswerTable.from_ids([1], ["a"], ["zebra"], classes=["cat"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"item": [0, 1], "annotator": [0], "label": [0, 0], "n_items": 2, "n_annotators": 1, "n_classes": 1},
        {"item": [0, 2], "annotator": [0, 0], "label": [0, 0], "n_items": 2, "n_annotators": 1, "n_classes": 1},
        {"item": [0.5], "annotator": [0], "label": [0], "n_items": 2, "n_annotators": 1, "n_classes": 1},
        {"item": [0], "annotator": [0], "label": [0], "n_items": 1, "n_annotators": 1, "n_classes": 1, "weight": [-1]},
    ],
)
def test_answer_table_rejects_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(AnswerTableError):
        AnswerTable(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ majority vote


def test_majority_vote_tie_break_by_prior_then_lowest_index() -> None:
    # Item 0: a 1-1 tie between A and C. Class C has more votes project-wide.
    rows = [(0, 0, A), (0, 1, C), (1, 0, C), (1, 1, C), (2, 0, B), (2, 1, B)]
    table = _table(rows, n_classes=3)
    prior = MajorityVote().fit(table)
    lowest = MajorityVote(tie_break="lowest").fit(table)
    assert prior.labels_.tolist() == [C, C, B]
    assert lowest.labels_.tolist() == [A, C, B]
    np.testing.assert_allclose(prior.probas_[0], [0.5, 0.0, 0.5])
    # Equal project-wide counts fall back to the lowest index.
    tie = _table([(0, 0, B), (0, 1, A)], n_classes=2)
    assert MajorityVote().fit(tie).labels_.tolist() == [A]


def test_majority_vote_accuracy_against_consensus() -> None:
    rows = [(0, 0, A), (0, 1, A), (0, 2, B), (1, 0, B), (1, 1, B), (1, 2, B)]
    mv = MajorityVote().fit(_table(rows, n_annotators=4))
    np.testing.assert_allclose(mv.accuracy_[:3], [1.0, 1.0, 0.5])
    assert np.isnan(mv.accuracy_[3])  # no answers
    np.testing.assert_allclose(mv.confusion_[2], [[0.0, 1.0], [0.0, 1.0]])


def test_weighted_model_voter_breaks_ties_but_never_outvotes_humans() -> None:
    model = 9
    rows = [(0, 0, A), (0, 1, B), (0, model, B), (1, 0, A), (1, 1, A), (1, 2, B), (1, model, B)]
    weight = [1, 1, 0.3, 1, 1, 1, 0.3]
    item, annotator, label = zip(*rows, strict=True)
    table = AnswerTable.from_arrays(item, annotator, label, weight=weight)
    mv = MajorityVote().fit(table)
    assert mv.labels_.tolist() == [B, A]
    np.testing.assert_allclose(mv.probas_[0], [1 / 2.3, 1.3 / 2.3])


# ------------------------------------------------------------------ Dawid–Skene


def _reliable_vs_confusers() -> tuple[AnswerTable, np.ndarray, np.ndarray]:
    """R1, R2 always right; X1, X2 always swap A and B (right on C).

    Items seen by (R1, R2, X1) and (R1, R2, X2) reveal the swap; items seen by (R1, X1, X2) are
    the test: majority vote follows the two confusers, Dawid–Skene the reliable annotator.
    """
    r1, r2, x1, x2 = 0, 1, 2, 3
    swap = np.array([B, A, C])
    truth = np.tile([A, B, C], 40)  # 120 items
    groups = [(r1, r2, x1)] * 45 + [(r1, r2, x2)] * 45 + [(r1, x1, x2)] * 30
    rows = []
    for i, (t, who) in enumerate(zip(truth, groups, strict=True)):
        for a in who:
            rows.append((i, a, int(swap[t]) if a in (x1, x2) else int(t)))
    test_items = np.arange(90, 120)
    return _table(rows, n_classes=3), truth, test_items


def test_dawid_skene_reliable_annotator_outvotes_two_confusers() -> None:
    table, truth, test_items = _reliable_vs_confusers()
    mv = MajorityVote().fit(table)
    ds = DawidSkene().fit(table)
    ab = test_items[truth[test_items] != C]
    assert (mv.labels_[ab] != truth[ab]).all()  # majority vote is fooled on every A/B item
    assert (ds.labels_ == truth).all()
    assert (ds.confidence_[ab] > 0.9).all()
    # The confusers' learned confusion matrices show the swap.
    assert ds.confusion_[2, A, B] > 0.8 and ds.confusion_[2, B, A] > 0.8
    assert ds.confusion_[0, A, A] > 0.9
    assert ds.accuracy_[0] > ds.accuracy_[2]


def test_gold_clamping_changes_the_answer() -> None:
    # Two annotators agree on 10 items and disagree on 10; only gold can say whom to believe.
    rows = []
    for i in range(10):
        rows += [(i, 0, i % 2), (i, 1, i % 2)]
    for i in range(10, 20):
        rows += [(i, 0, A), (i, 1, B)]
    table = _table(rows, n_classes=2)
    gold_0 = {10: A, 11: A, 12: A}  # annotator 0 right on the gold items
    gold_1 = {10: B, 11: B, 12: B}  # annotator 1 right
    for cls in EM:
        with_0 = cls().fit(table, gold=gold_0)
        with_1 = cls().fit(table, gold=gold_1)
        assert (with_0.labels_[13:20] == A).all(), cls.__name__
        assert (with_1.labels_[13:20] == B).all(), cls.__name__
        np.testing.assert_array_equal(with_1.probas_[10], [0.0, 1.0])
    mv = MajorityVote().fit(table, gold=gold_1)
    assert mv.labels_[10] == B and mv.labels_[13] == A


def test_smoothing_keeps_a_few_label_annotator_from_dominating() -> None:
    # R1, R2, R3 label 40 items; R1 errs on 4 (accuracy ~0.9). Newcomer N gives 4 answers: two that
    # agree with a 3-person consensus (one A, one B), one on an item only R1 also answered (they
    # disagree), and one on an item nobody else answered.
    r1, r2, r3, n = 0, 1, 2, 3
    rows = []
    for i in range(40):
        t = i % 2
        rows += [(i, r1, 1 - t if i < 4 else t), (i, r2, t), (i, r3, t)]
    rows += [(40, r2, A), (40, r3, A), (40, n, A), (41, r2, B), (41, r3, B), (41, n, B)]
    lone = _table([*rows, (42, n, A)], n_classes=2)  # an item only N answered
    contested = _table([*rows, (42, n, A), (42, r1, B)], n_classes=2)  # N and R1 disagree
    # Without the prior, two agreeing answers make N look perfect: its lone answer is taken as
    # certain, and N's estimated accuracy ties the annotators with 40 answers.
    unsmoothed = DawidSkene(smoothing=0.0).fit(lone)
    assert unsmoothed.confidence_[42] > 0.99
    assert unsmoothed.accuracy_[n] > unsmoothed.accuracy_[r2] - 1e-6
    # With it, N is a moderately good unknown, and R1's record wins a disagreement.
    smoothed = DawidSkene().fit(lone)
    assert smoothed.confidence_[42] < 0.9
    assert smoothed.accuracy_[n] < smoothed.accuracy_[r1] < smoothed.accuracy_[r2]
    smoothed = DawidSkene().fit(contested)
    assert smoothed.labels_[42] == B


@pytest.mark.parametrize("cls", EM)
def test_log_likelihood_never_decreases(cls: type[DawidSkene], rng: np.random.Generator) -> None:
    conf = np.stack(
        [np.full((3, 3), 0.1) + np.eye(3) * 0.7, np.full((3, 3), 1 / 3), np.eye(3)[[1, 2, 0]] * 0.8 + 0.2 / 3]
    )
    table, _ = _simulate(rng, 300, np.concatenate([conf, conf]), 3, np.array([0.5, 0.3, 0.2]))
    model = cls(tol=0.0, max_iter=40).fit(table)
    history = np.array(model.log_likelihood_history_)
    assert (np.diff(history) >= -1e-7 * np.abs(history[:-1])).all()


def _reference_dawid_skene(table: AnswerTable, smoothing: float, diagonal: float, n_iter: int) -> np.ndarray:
    """Loop-per-answer EM, written from the paper, as an oracle for the vectorized one."""
    k, n_a = table.n_classes, table.n_annotators
    prior_m = np.full((k, k), (1 - diagonal) / (k - 1))
    np.fill_diagonal(prior_m, diagonal)
    t = np.zeros((table.n_items, k))
    for i, lab in zip(table.item, table.label, strict=True):
        t[i, lab] += 1
    t /= t.sum(axis=1, keepdims=True)
    for _ in range(n_iter):
        priors = (t.sum(axis=0) + 1.0) / (t.sum() + k)
        pi = np.tile(smoothing * prior_m, (n_a, 1, 1))
        for i, a, lab in zip(table.item, table.annotator, table.label, strict=True):
            pi[a, :, lab] += t[i]
        pi /= pi.sum(axis=2, keepdims=True)
        log_t = np.tile(np.log(priors), (table.n_items, 1))
        for i, a, lab in zip(table.item, table.annotator, table.label, strict=True):
            log_t[i] += np.log(pi[a, :, lab])
        t = np.exp(log_t - log_t.max(axis=1, keepdims=True))
        t /= t.sum(axis=1, keepdims=True)
    return t


def test_dawid_skene_matches_loop_reference(rng: np.random.Generator) -> None:
    conf = np.stack([np.eye(3) * 0.6 + 0.4 / 3, np.eye(3) * 0.9 + 0.1 / 3, np.full((3, 3), 1 / 3)] * 2)
    table, _ = _simulate(rng, 150, conf, 3, np.array([0.5, 0.3, 0.2]))
    ds = DawidSkene(max_iter=15, tol=0.0, smoothing=2.0, prior_diagonal=0.7).fit(table)
    np.testing.assert_allclose(ds.probas_, _reference_dawid_skene(table, 2.0, 0.7, 15), atol=1e-10)


def test_dawid_skene_recovers_confusions_and_uses_an_adversary(rng: np.random.Generator) -> None:
    good = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    over_calls_c = np.array([[0.7, 0.0, 0.3], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]])
    spammer = np.full((3, 3), 1 / 3)
    adversary = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    conf = np.stack([good, good, over_calls_c, over_calls_c, spammer, adversary])
    table, truth = _simulate(rng, 4000, conf, 4, np.array([0.5, 0.3, 0.2]))
    ds = DawidSkene().fit(table)
    mv = MajorityVote().fit(table)
    assert (ds.labels_ == truth).mean() > (mv.labels_ == truth).mean() + 0.03
    np.testing.assert_allclose(ds.confusion_, conf, atol=0.05)
    np.testing.assert_allclose(ds.priors_, [0.5, 0.3, 0.2], atol=0.03)
    mace = MACE().fit(table)
    assert mace.competence_[4] < 0.15 and mace.competence_[5] < 0.15 and mace.competence_[0] > 0.8


def test_one_coin_recovers_accuracies(rng: np.random.Generator) -> None:
    accs = np.array([0.95, 0.8, 0.7, 0.6, 0.5])
    conf = np.stack([np.eye(4) * a + (1 - a) / 3 * (1 - np.eye(4)) for a in accs])
    table, truth = _simulate(rng, 3000, conf, 3, np.full(4, 0.25))
    oc = OneCoinDawidSkene().fit(table)
    np.testing.assert_allclose(oc.accuracy_, accs, atol=0.04)
    np.testing.assert_allclose(oc.confusion_.sum(axis=2), 1.0)


# ------------------------------------------------------------------ edge cases and contract


@pytest.mark.parametrize("cls", ALL)
def test_empty_input_gives_empty_result(cls: type[MajorityVote]) -> None:
    model = cls().fit(AnswerTable.from_arrays([], [], [], n_classes=3))
    assert model.probas_.shape == (0, 3) and model.labels_.shape == (0,)
    assert model.confusion_.shape == (0, 3, 3) and model.accuracy_.shape == (0,)
    fully_empty = cls().fit(AnswerTable.from_arrays([], [], []))
    assert fully_empty.probas_.shape == (0, 0)


@pytest.mark.parametrize("cls", ALL)
def test_items_without_answers_get_the_prior_and_a_flag(cls: type[MajorityVote]) -> None:
    rows = [(0, 0, A), (0, 1, A), (1, 0, A), (1, 1, B), (3, 0, B), (3, 1, B), (4, 0, A), (4, 1, A)]
    model = cls().fit(_table(rows, n_items=6, n_annotators=3, n_classes=2))
    assert model.no_answer_.tolist() == [False, False, True, False, False, True]
    np.testing.assert_allclose(model.probas_[2], model.priors_)
    np.testing.assert_allclose(model.probas_.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.confidence_, model.probas_.max(axis=1))
    assert model.confusion_.shape == (3, 2, 2) and model.accuracy_.shape == (3,)


@pytest.mark.parametrize("cls", ALL)
def test_not_fitted_and_bad_gold(cls: type[MajorityVote]) -> None:
    with pytest.raises(NotFittedError):
        cls().predict_proba()
    table = _table([(0, 0, A), (1, 0, B)])
    with pytest.raises(GoldError):
        cls().fit(table, gold={5: A})
    with pytest.raises(GoldError):
        cls().fit(table, gold={0: 7})
    assert cls().fit(table).predict().shape == (2,)


@pytest.mark.parametrize("cls", EM)
def test_bad_hyperparameters(cls: type[DawidSkene]) -> None:
    table = _table([(0, 0, A)])
    for bad in ({"max_iter": 0}, {"tol": -1.0}, {"smoothing": -1.0}):
        with pytest.raises(ValueError):
            cls(**bad).fit(table)  # type: ignore[arg-type]


def test_annotator_confusion_counts_against_a_reference() -> None:
    table = _table([(0, 0, A), (1, 0, B), (1, 1, A)], n_classes=2)
    counts = annotator_confusion(table, np.array([A, A]), mask=np.array([True, True]))
    np.testing.assert_array_equal(counts[0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(counts[1], [[1, 0], [0, 0]])
