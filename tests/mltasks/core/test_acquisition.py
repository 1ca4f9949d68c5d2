"""Score functions with known answers, top-k selection, and the geometric strategies' behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from mltasks.core.acquisition import (
    DEFAULT_STRATEGY,
    REGISTRY,
    badge,
    bald,
    cluster_margin,
    entropy,
    hybrid,
    kcenter_greedy,
    least_confidence,
    margin,
    min_sq_distances,
    select,
    select_top_k,
    typiclust,
    weak_fraction,
)
from mltasks.core.errors import MissingInputError, ShapeError, UnknownNameError

P = np.array(
    [
        [1.0, 0.0, 0.0],  # certain
        [0.5, 0.5, 0.0],  # two-way tie
        [1 / 3, 1 / 3, 1 / 3],  # uniform
        [0.6, 0.3, 0.1],
    ]
)


def test_score_known_answers() -> None:
    np.testing.assert_allclose(least_confidence(P), [0.0, 0.5, 2 / 3, 0.4], atol=1e-6)
    np.testing.assert_allclose(margin(P), [0.0, 1.0, 1.0, 0.7], atol=1e-6)
    np.testing.assert_allclose(
        entropy(P), [0.0, np.log(2), np.log(3), -(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1))], atol=1e-6
    )


def test_bald_known_answers() -> None:
    # Every sample agrees: no mutual information even if each is uncertain.
    agree = np.stack([P, P, P])
    np.testing.assert_allclose(bald(agree), 0.0, atol=1e-6)
    # Two confident samples that disagree: MI = H(mean) - mean H = log 2.
    a = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(bald(a), [np.log(2)], atol=1e-6)
    with pytest.raises(ShapeError):
        bald(P)


def test_select_top_k_orders_best_first_and_breaks_ties_with_rng() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.9, 0.2])
    picks = {tuple(select_top_k(scores, 2, rng=np.random.default_rng(s))) for s in range(30)}
    assert all(set(p) <= {1, 3, 4} for p in picks)
    assert len(picks) > 1  # the tie is broken differently by different generators
    assert select_top_k(scores, 4, rng=np.random.default_rng(0))[3] == 2
    np.testing.assert_array_equal(
        select_top_k(scores, 3, rng=np.random.default_rng(7)), select_top_k(scores, 3, rng=np.random.default_rng(7))
    )


def test_select_top_k_nan_is_lowest() -> None:
    scores = np.array([np.nan, 0.1, 0.2])
    assert select_top_k(scores, 2, rng=np.random.default_rng(0)).tolist() == [2, 1]


def test_min_sq_distances_matches_brute_force(rng: np.random.Generator) -> None:
    x = rng.normal(size=(300, 8)).astype(np.float32)
    c = rng.normal(size=(17, 8)).astype(np.float32)
    d2, arg = min_sq_distances(x, c)
    brute = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d2, brute.min(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(arg, brute.argmin(axis=1))


def _blobs(rng: np.random.Generator, n_blobs: int = 5, per: int = 40, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(n_blobs, d)) * 20
    x = np.concatenate([c + rng.normal(size=(per, d)) for c in centers]).astype(np.float32)
    return x, np.repeat(np.arange(n_blobs), per)


def test_kcenter_covers_every_blob(rng: np.random.Generator) -> None:
    x, blob = _blobs(rng)
    picks = kcenter_greedy(x, 5, rng=np.random.default_rng(1))
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3, 4]


def test_kcenter_avoids_blobs_already_labeled(rng: np.random.Generator) -> None:
    x, blob = _blobs(rng)
    labeled = x[blob < 3][:3]  # one labeled item in blobs 0..2 (all three come from blob 0 here)
    labeled = np.stack([x[blob == b][0] for b in range(3)])
    picks = kcenter_greedy(x, 2, labeled_embeddings=labeled, rng=np.random.default_rng(1))
    assert sorted(blob[picks].tolist()) == [3, 4]


def test_typiclust_picks_one_typical_item_per_blob(rng: np.random.Generator) -> None:
    x, blob = _blobs(rng)
    picks = typiclust(x, 5, rng=np.random.default_rng(0))
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3, 4]
    # typical = close to the blob's centre, not an outlier
    for p in picks:
        members = x[blob == blob[p]]
        dist = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(x[p] - members.mean(0)) <= np.quantile(dist, 0.5)


def test_badge_prefers_uncertain_and_diverse(rng: np.random.Generator) -> None:
    x, blob = _blobs(rng, n_blobs=4, per=50)
    probs = np.full((x.shape[0], 2), [0.999, 0.001])
    uncertain = blob >= 2  # blobs 2 and 3 are where the model hesitates
    probs[uncertain] = [0.5, 0.5]
    picks = badge(probs, x, 2, rng=np.random.default_rng(0))
    assert sorted(blob[picks].tolist()) == [2, 3]


def test_badge_gradient_norm_trick_matches_explicit_embeddings(rng: np.random.Generator) -> None:
    # With k = n every item is picked; the *first* pick must be the largest explicit gradient norm.
    x = rng.normal(size=(30, 4)).astype(np.float32)
    logits = rng.normal(size=(30, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    a = probs.copy()
    a[np.arange(30), probs.argmax(1)] -= 1
    g = (a[:, :, None] * x[:, None, :]).reshape(30, -1)  # explicit (n, c*d) gradient embeddings
    picks = badge(probs, x, 30, rng=np.random.default_rng(0))
    assert picks[0] == int(np.argmax((g**2).sum(1)))
    assert sorted(picks.tolist()) == list(range(30))


def test_large_pool_uses_candidates_and_stays_valid(rng: np.random.Generator) -> None:
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    probs = rng.dirichlet(np.ones(4), size=3000).astype(np.float32)
    for name, kwargs in (
        ("kcenter", {"embeddings": x}),
        ("badge", {"embeddings": x, "probs": probs}),
        ("typiclust", {"embeddings": x}),
    ):
        from mltasks.core.acquisition import REGISTRY

        strat = REGISTRY[name]
        small = type(strat)(max_candidates=500)  # type: ignore[call-arg]
        from mltasks.core.acquisition import PoolInputs

        picks = small.select(50, PoolInputs(**kwargs), rng=np.random.default_rng(0))
        assert picks.size == 50 and np.unique(picks).size == 50 and picks.max() < 3000


def test_select_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UnknownNameError):
        select("nope", 1, probs=P, rng=rng)
    with pytest.raises(MissingInputError):
        select("margin", 1, embeddings=np.zeros((4, 2)), rng=rng)
    with pytest.raises(MissingInputError):
        select("random", 1, rng=rng)
    with pytest.raises(ShapeError):
        select("badge", 1, probs=P, embeddings=np.zeros((5, 2)), rng=rng)
    with pytest.raises(ValueError):
        select("margin", -1, probs=P, rng=rng)


# --- cluster-margin and the hybrid default ------------------------------------------------------------------------


def _uncertain_blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 blobs of 50; the model hesitates in blobs 2 and 3, a little more in blob 2 than in blob 3."""
    x, blob = _blobs(rng, n_blobs=4, per=50)
    probs = np.tile([0.99, 0.01], (x.shape[0], 1))
    probs[blob == 2] = [0.51, 0.49]
    probs[blob == 3] = [0.55, 0.45]
    probs += rng.uniform(0, 1e-3, size=probs.shape)  # no exact ties
    return x, blob, (probs / probs.sum(1, keepdims=True)).astype(np.float32)


def test_cluster_margin_spreads_the_batch_over_the_uncertain_region(rng: np.random.Generator) -> None:
    x, blob, probs = _uncertain_blobs(rng)
    top = select_top_k(margin(probs), 2, rng=np.random.default_rng(0))
    assert blob[top].tolist() == [2, 2]  # plain margin: two near-copies from the most uncertain blob
    picks = cluster_margin(probs, x, 2, rng=np.random.default_rng(0), candidate_factor=50)
    assert sorted(blob[picks].tolist()) == [2, 3]  # one per cluster of the uncertain candidates
    # each pick is its cluster's most uncertain member, and the batch is ordered most uncertain first
    scores = margin(probs)
    for p in picks:
        assert scores[p] == scores[blob == blob[p]].max()
    assert scores[picks[0]] >= scores[picks[1]]


def test_cluster_margin_never_leaves_the_candidates(rng: np.random.Generator) -> None:
    x, blob, probs = _uncertain_blobs(rng)
    picks = cluster_margin(probs, x, 10, rng=np.random.default_rng(0), candidate_factor=3)
    candidates = set(select_top_k(margin(probs), 30, rng=np.random.default_rng(0)).tolist())
    assert set(picks.tolist()) <= candidates and np.unique(picks).size == 10
    assert set(blob[picks].tolist()) <= {2, 3}  # confident blobs are never candidates


def test_cluster_margin_fills_the_batch_when_every_item_is_a_duplicate() -> None:
    x = np.ones((40, 3), dtype=np.float32)  # k-means finds one non-empty cluster
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=40).astype(np.float32)
    picks = cluster_margin(probs, x, 8, rng=np.random.default_rng(0))
    assert picks.size == 8 and np.unique(picks).size == 8
    np.testing.assert_array_equal(np.sort(picks), np.sort(select_top_k(margin(probs), 8, rng=np.random.default_rng(0))))


def test_weak_fraction_known_answers() -> None:
    assert weak_fraction([0, 0, 0], 5) == 1.0
    assert weak_fraction([5, 9, 100], 5) == 0.0
    assert weak_fraction([1, 5], 5) == pytest.approx(0.4)  # 1 - 3 / 5
    assert weak_fraction([0, 12], 5) == 0.0  # the mean: an easy class left at 0 labels does not keep it weak
    assert weak_fraction([], 5) == 0.0


def test_hybrid_is_typiclust_for_a_weak_model_and_cluster_margin_once_every_class_has_enough(
    rng: np.random.Generator,
) -> None:
    x, _, probs = _uncertain_blobs(rng)
    none_yet = hybrid(probs, x, 6, labeled_counts=[0, 0], rng=np.random.default_rng(3))
    np.testing.assert_array_equal(none_yet, typiclust(x, 6, rng=np.random.default_rng(3)))
    enough = hybrid(probs, x, 6, labeled_counts=[5, 7], rng=np.random.default_rng(3))
    np.testing.assert_array_equal(enough, cluster_margin(probs, x, 6, rng=np.random.default_rng(3)))


def test_hybrid_splits_the_batch_by_how_weak_each_class_is(rng: np.random.Generator) -> None:
    x, blob, probs = _uncertain_blobs(rng)
    labeled = x[[0, 60]]  # blobs 0 and 1 already hold a label
    # 3 labels per class on average, 5 wanted: 40% of 10 picks are typical points
    picks = hybrid(probs, x, 10, labeled_embeddings=labeled, labeled_counts=[1, 5], rng=np.random.default_rng(0))
    assert picks.size == 10 and np.unique(picks).size == 10
    typical = typiclust(x, 4, labeled_embeddings=labeled, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(picks[:4], typical)
    assert set(blob[typical].tolist()) <= {2, 3}  # TypiClust goes to the blobs no label covers yet
    assert set(blob[picks[4:]].tolist()) <= {2, 3}  # the margin part: the uncertain blobs
    # without counts, L / c labels per class are assumed: 2 labels / 2 classes = 1 each, weak 0.8, 8 typical
    no_counts = hybrid(probs, x, 10, labeled_embeddings=labeled, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(
        no_counts[:8], typiclust(x, 8, labeled_embeddings=labeled, rng=np.random.default_rng(0))
    )


def test_hybrid_is_the_default_and_reads_labeled_counts_through_select(rng: np.random.Generator) -> None:
    assert DEFAULT_STRATEGY == "hybrid" and DEFAULT_STRATEGY in REGISTRY
    x, _, probs = _uncertain_blobs(rng)
    a = select("hybrid", 5, probs=probs, embeddings=x, labeled_counts=[9, 9], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, cluster_margin(probs, x, 5, rng=np.random.default_rng(1)))
    b = select("hybrid", 5, probs=probs, embeddings=x, labeled_counts=[9, 9], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ShapeError):
        select("hybrid", 5, probs=probs, embeddings=x, labeled_counts=[1, 2, 3], rng=np.random.default_rng(1))
    with pytest.raises(MissingInputError):
        select("hybrid", 5, probs=probs, rng=np.random.default_rng(1))
