"""Query strategies: which unlabeled items should a human label next.

Three layers (modAL / small-text shape):

1. Pure score functions ``(n, k) probabilities -> (n,) scores``, higher = more informative:
   ``least_confidence``, ``margin``, ``entropy``; ``bald`` maps MC-dropout samples ``(T, n, k) -> (n,)``.
2. ``select_top_k(scores, k, *, rng)``: the k best scores, ties broken by ``rng`` (never the global RNG).
3. Strategies, one ``select`` protocol, looked up by name in ``STRATEGIES``; ``select(name, k, ...)`` is the
   entry point the services call. Batch-aware strategies (``kcenter``, ``badge``, ``typiclust``,
   ``cluster_margin``, ``hybrid``) pick a diverse batch, not k near-copies of one image. The default, ``hybrid``,
   spends the batch on TypiClust's typical points while the labeled set has few labels per class and on
   cluster-margin (the most uncertain item of each of k clusters of the top margin candidates) after.

Every strategy selects from the *unlabeled pool* and returns ``k`` distinct indices into it, in priority order
(first = most wanted). Labeled items are never in the pool, they only enter as ``labeled_embeddings`` (initial
centers for k-center, covered clusters for TypiClust). An empty pool raises ``EmptyPoolError``; ``k`` larger than the
pool raises ``PoolTooSmallError``; a missing input raises ``MissingInputError``.

Scale (1M items x 1280 dims, k = 1000, 2 CPU cores; see docs/ml.md for the measured figures): the uncertainty
scores are O(n k) and run in well under a second. The geometric methods are quadratic in spirit, so they run on a
candidate subset of at most ``max_candidates`` items (default 20,000, raised to ``4 k`` for large batches): a random
subset for k-center and TypiClust (coverage of the distribution), the items with the largest gradient-embedding norm
for BADGE (the only ones k-means++ would realistically pick), the 10 k items of highest margin for cluster-margin.
Distances are float32 and computed in row chunks, so nothing n x n (or n x candidates) is materialised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mltasks.core.errors import EmptyPoolError, MissingInputError, PoolTooSmallError, ShapeError, UnknownNameError

FloatArray = NDArray[np.float32]
IndexArray = NDArray[np.int64]

# Rows per block in chunked distance computations: keeps a (chunk, centers) float32 block around 64 MB.
_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------------------------
# 1. Score functions
# --------------------------------------------------------------------------------------------------------------


def _probs(probs: ArrayLike) -> FloatArray:
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2:
        raise ShapeError(f"probabilities must be (n, k), got shape {p.shape}")
    return p


def least_confidence(probs: ArrayLike) -> FloatArray:
    """1 - max_c p(c|x); shape (n,). Settles (Lewis & Gale 1994)."""
    p = _probs(probs)  # (n, k)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0], dtype=np.float32)
    return np.asarray(1.0 - p.max(axis=1), dtype=np.float32)  # (n,)


def margin(probs: ArrayLike) -> FloatArray:
    """1 - (p_top1 - p_top2): high when the two best classes are close; shape (n,) (Scheffer et al. 2001)."""
    p = _probs(probs)  # (n, k)
    if p.shape[1] < 2:
        return np.zeros(p.shape[0], dtype=np.float32)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]  # (n, 2): [second, first]
    return np.asarray(1.0 - (top2[:, 1] - top2[:, 0]), dtype=np.float32)  # (n,)


def _entropy_rows(p: FloatArray) -> FloatArray:
    # 0 log 0 = 0: where p == 0 the product is 0 whatever log returns, so clip only inside the log.
    return np.asarray(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1), dtype=np.float32)


def entropy(probs: ArrayLike) -> FloatArray:
    """Shannon entropy -sum_c p log p (nats); shape (n,) (Shannon 1948; Settles 2009 survey)."""
    return _entropy_rows(_probs(probs))


def bald(mc_probs: ArrayLike, *, chunk: int = 65536) -> FloatArray:
    """BALD mutual information I[y; w | x] = H[E_w p] - E_w H[p] from MC-dropout samples.

    mc_probs: (T, n, k) probabilities of T stochastic forward passes. Returns (n,), >= 0 up to rounding.
    Houlsby et al. 2011 (https://arxiv.org/abs/1112.5745); Gal et al. 2017 for MC dropout. Chunked over n so
    the (T, chunk, k) temporaries stay small at 1M items.
    """
    mc = np.asarray(mc_probs, dtype=np.float32)
    if mc.ndim != 3:
        raise ShapeError(f"MC probabilities must be (T, n, k), got shape {mc.shape}")
    n = mc.shape[1]
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = mc[:, start : start + chunk]  # (T, c, k)
        mean_entropy = _entropy_rows(block).mean(axis=0)  # (c,)
        out[start : start + chunk] = _entropy_rows(block.mean(axis=0)) - mean_entropy
    return np.maximum(out, 0.0)


SCORE_FUNCTIONS: Mapping[str, Callable[[ArrayLike], FloatArray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}


# --------------------------------------------------------------------------------------------------------------
# 2. Selection
# --------------------------------------------------------------------------------------------------------------


def _check_k(k: int, n: int) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if n == 0:
        raise EmptyPoolError("the unlabeled pool is empty")
    if k > n:
        raise PoolTooSmallError(f"asked for {k} items but the unlabeled pool holds {n}")


def select_top_k(scores: ArrayLike, k: int, *, rng: np.random.Generator) -> IndexArray:
    """Indices of the k highest scores, best first; equal scores are ordered at random by ``rng``.

    NaN scores count as the lowest. O(n) (a partition), not a full sort.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ShapeError(f"scores must be (n,), got shape {s.shape}")
    n = s.size
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    s = np.where(np.isnan(s), -np.inf, s)
    kth = np.partition(s, n - k)[n - k]  # the k-th largest score
    above = np.flatnonzero(s > kth)
    tied = np.flatnonzero(s == kth)
    chosen = np.concatenate([above, rng.choice(tied, size=k - above.size, replace=False)])
    chosen = chosen[rng.permutation(chosen.size)]  # random order among equal scores ...
    return chosen[np.argsort(-s[chosen], kind="stable")].astype(np.int64)  # ... kept by the stable sort


# --------------------------------------------------------------------------------------------------------------
# Geometry helpers (float32, chunked)
# --------------------------------------------------------------------------------------------------------------


def _embeddings(x: ArrayLike, name: str) -> FloatArray:
    e = np.asarray(x, dtype=np.float32)
    if e.ndim != 2:
        raise ShapeError(f"{name} must be (n, d), got shape {e.shape}")
    return e


def _sq_norms(x: FloatArray) -> FloatArray:
    out: FloatArray = np.einsum("ij,ij->i", x, x, dtype=np.float32)  # (n,)
    return out


def min_sq_distances(x: FloatArray, centers: FloatArray) -> tuple[FloatArray, IndexArray]:
    """For each row of x (n, d): squared distance to its nearest center (m, d) and that center's index.

    ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c, one GEMM per row chunk; never holds more than ~64 MB of distances.
    """
    n = x.shape[0]
    best = np.full(n, np.inf, dtype=np.float32)
    arg = np.zeros(n, dtype=np.int64)
    if centers.shape[0] == 0 or n == 0:
        return best, arg
    c_norms = _sq_norms(centers)  # (m,)
    rows = max(1, _CHUNK_BYTES // (4 * centers.shape[0]))
    for start in range(0, n, rows):
        block = x[start : start + rows]  # (r, d)
        d2 = _sq_norms(block)[:, None] + c_norms[None, :] - 2.0 * (block @ centers.T)  # (r, m)
        a = d2.argmin(axis=1)
        arg[start : start + rows] = a
        best[start : start + rows] = np.maximum(d2[np.arange(a.size), a], 0.0)
    return best, arg


def _candidates(n: int, k: int, max_candidates: int, rng: np.random.Generator) -> IndexArray:
    m = max(max_candidates, 4 * k)
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def kcenter_greedy(
    embeddings: ArrayLike,
    k: int,
    *,
    labeled_embeddings: ArrayLike | None = None,
    rng: np.random.Generator,
    max_candidates: int = 20_000,
) -> IndexArray:
    """Greedy k-center (core-set): repeatedly take the pool item farthest from every center chosen so far.

    embeddings: (n, d) pool; labeled_embeddings: (L, d) initial centers (none: the first center is drawn by rng).
    A 2-approximation of the minimax facility location (Sener & Savarese 2018, https://arxiv.org/abs/1708.00489).
    Cost O(k m d) on m = min(n, max(max_candidates, 4k)) random candidates, plus O(m L d) for the labeled centers.
    """
    x_all = _embeddings(embeddings, "embeddings")
    n = x_all.shape[0]
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cand = _candidates(n, k, max_candidates, rng)
    x = x_all[cand] if cand.size < n else x_all  # (m, d)
    if labeled_embeddings is not None:
        lab = _embeddings(labeled_embeddings, "labeled_embeddings")
        if lab.shape[0] and lab.shape[1] != x.shape[1]:
            raise ShapeError(f"labeled embeddings have dim {lab.shape[1]}, pool has {x.shape[1]}")
        min_d2, _ = min_sq_distances(x, lab)  # (m,)
    else:
        min_d2 = np.full(x.shape[0], np.inf, dtype=np.float32)
    x_norms = _sq_norms(x)  # (m,)
    picked = np.empty(k, dtype=np.int64)
    for i in range(k):
        j = int(rng.integers(x.shape[0])) if np.isinf(min_d2).all() else int(np.argmax(min_d2))
        picked[i] = j
        d2 = x_norms + x_norms[j] - 2.0 * (x @ x[j])  # (m,)
        np.minimum(min_d2, np.maximum(d2, 0.0), out=min_d2)
        min_d2[j] = -np.inf  # never again, even if every remaining item duplicates a center
    return cand[picked]


def badge(
    probs: ArrayLike,
    embeddings: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator,
    max_candidates: int = 20_000,
) -> IndexArray:
    """BADGE: k-means++ seeding on last-layer gradient embeddings g_i = (p_i - onehot(argmax p_i)) (x) x_i.

    probs: (n, c) predicted probabilities; embeddings: (n, d) the input of the head's last layer (the frozen
    features for a linear head, ``heads.penultimate_features`` for an MLP). Ash et al. 2020,
    https://arxiv.org/abs/1906.03671.

    The (n, c*d) gradient embeddings are never built: with a_i = p_i - e_i,
    ||g_i||^2 = ||a_i||^2 ||x_i||^2 and <g_i, g_j> = <a_i, a_j> <x_i, x_j>, so one k-means++ step costs two
    matrix-vector products, O(m (c + d)). Candidates: the m items of largest ||g|| (the D^2 sampling of
    k-means++ gives the small-gradient items negligible mass anyway).
    """
    p = _probs(probs)  # (n, c)
    x_all = _embeddings(embeddings, "embeddings")  # (n, d)
    n = x_all.shape[0]
    if p.shape[0] != n:
        raise ShapeError(f"probs has {p.shape[0]} rows, embeddings {n}")
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    a_all = p.copy()  # (n, c)
    a_all[np.arange(n), p.argmax(axis=1)] -= 1.0
    g_norms_all = _sq_norms(a_all) * _sq_norms(x_all)  # (n,) = ||g_i||^2
    m = max(max_candidates, 4 * k)
    if n > m:
        cand = np.sort(np.argpartition(-g_norms_all, m - 1)[:m]).astype(np.int64)
        a, x, g_norms = a_all[cand], x_all[cand], g_norms_all[cand]
    else:
        cand = np.arange(n, dtype=np.int64)
        a, x, g_norms = a_all, x_all, g_norms_all
    picked = np.empty(k, dtype=np.int64)
    min_d2 = np.full(cand.size, np.inf, dtype=np.float32)
    j = int(np.argmax(g_norms))  # BADGE starts from the largest gradient
    for i in range(k):
        picked[i] = j
        d2 = g_norms + g_norms[j] - 2.0 * (a @ a[j]) * (x @ x[j])  # (m,)
        np.minimum(min_d2, np.maximum(d2, 0.0), out=min_d2)
        min_d2[picked[: i + 1]] = 0.0
        if i + 1 == k:
            break
        total = float(min_d2.sum(dtype=np.float64))
        if total > 0 and np.isfinite(total):
            j = int(rng.choice(cand.size, p=min_d2.astype(np.float64) / total))
        else:  # every remaining gradient coincides with a center: uniform among the unpicked
            free = np.setdiff1d(np.arange(cand.size), picked[: i + 1])
            j = int(rng.choice(free))
    return cand[picked]


def kmeans(
    x: FloatArray, n_clusters: int, *, rng: np.random.Generator, n_iter: int = 10
) -> tuple[FloatArray, IndexArray]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007). Returns centers (c, d), labels (m,).

    float32, chunked distances; an emptied cluster keeps its previous center.
    """
    m = x.shape[0]
    n_clusters = min(n_clusters, m)
    norms = _sq_norms(x)
    centers_idx = np.empty(n_clusters, dtype=np.int64)
    centers_idx[0] = int(rng.integers(m))
    min_d2 = np.maximum(norms + norms[centers_idx[0]] - 2.0 * (x @ x[centers_idx[0]]), 0.0)
    for i in range(1, n_clusters):
        min_d2[centers_idx[:i]] = 0.0
        total = float(min_d2.sum(dtype=np.float64))
        if total > 0:
            j = int(rng.choice(m, p=min_d2.astype(np.float64) / total))
        else:
            j = int(rng.choice(np.setdiff1d(np.arange(m), centers_idx[:i])))
        centers_idx[i] = j
        np.minimum(min_d2, np.maximum(norms + norms[j] - 2.0 * (x @ x[j]), 0.0), out=min_d2)
    centers = x[centers_idx].copy()
    labels = np.zeros(m, dtype=np.int64)
    for it in range(n_iter):
        _, new_labels = min_sq_distances(x, centers)
        if it > 0 and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=n_clusters)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        nonempty = counts > 0
        centers[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centers, labels


def typiclust(
    embeddings: ArrayLike,
    k: int,
    *,
    labeled_embeddings: ArrayLike | None = None,
    rng: np.random.Generator,
    max_candidates: int = 20_000,
    n_neighbors: int = 20,
    min_cluster_size: int = 5,
) -> IndexArray:
    """TypiClust cold start: cluster the pool, take the most *typical* item of each uncovered cluster.

    Hacohen, Dekel & Weinshall 2022 (https://arxiv.org/abs/2202.02794). k-means into L + k clusters (L labeled);
    clusters holding a labeled item are covered; from the largest uncovered clusters (at least
    ``min_cluster_size`` items, relaxed when too few) take the item of highest typicality
    1 / mean distance to its ``n_neighbors`` nearest neighbours inside the cluster. When clusters run out, the
    next most typical items of the largest clusters fill the batch. Works with zero labels and no model.
    Cost: k-means++ seeding O(c m d) plus ~10 Lloyd iterations O(c m d) on m random candidates.
    """
    x_all = _embeddings(embeddings, "embeddings")
    n = x_all.shape[0]
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cand = _candidates(n, k, max_candidates, rng)
    x = x_all[cand] if cand.size < n else x_all  # (m, d)
    lab = None
    if labeled_embeddings is not None:
        lab = _embeddings(labeled_embeddings, "labeled_embeddings")
        lab = lab if lab.shape[0] else None
    n_lab = 0 if lab is None else lab.shape[0]
    centers, labels = kmeans(x, min(x.shape[0], k + n_lab), rng=rng)
    covered = np.zeros(centers.shape[0], dtype=bool)
    if lab is not None:
        _, lab_cluster = min_sq_distances(lab, centers)
        covered[lab_cluster] = True
    sizes = np.bincount(labels, minlength=centers.shape[0])
    # Per cluster, members ordered by typicality (most typical first).
    ranked: dict[int, IndexArray] = {}
    for cluster in np.flatnonzero(sizes > 0):
        c = int(cluster)
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(members.size)]  # equal typicality: the generator decides, not the index
        xc = x[members]  # (s, d)
        nn = min(n_neighbors, members.size - 1)
        if nn < 1:
            ranked[c] = members
            continue
        d2, _ = _pairwise_sq(xc)  # (s, s)
        np.fill_diagonal(d2, np.inf)
        knn = np.sqrt(np.partition(d2, nn - 1, axis=1)[:, :nn])  # (s, nn)
        typicality = 1.0 / (knn.mean(axis=1) + 1e-8)
        ranked[c] = members[np.argsort(-typicality, kind="stable")]
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    first = [c for c in order if not covered[c] and sizes[c] >= min_cluster_size]
    first += [c for c in order if not covered[c] and sizes[c] < min_cluster_size]
    picked: list[int] = [int(ranked[c][0]) for c in first[:k]]
    if len(picked) < k:
        # Fewer usable clusters than k: round-robin over clusters, largest first, next most typical member.
        taken = set(picked)
        depth = 0
        while len(picked) < k:
            for c in order:
                if depth < ranked[c].size and int(ranked[c][depth]) not in taken:
                    picked.append(int(ranked[c][depth]))
                    taken.add(picked[-1])
                    if len(picked) == k:
                        break
            depth += 1
    return cand[np.asarray(picked[:k], dtype=np.int64)]


def _cluster_margin_from_scores(
    scores: FloatArray,
    x_all: FloatArray,
    k: int,
    *,
    rng: np.random.Generator,
    n_eligible: int,
    candidate_factor: int,
    max_candidates: int,
) -> IndexArray:
    # scores (n,): margin scores, -inf for items that must not be chosen; n_eligible of them are finite.
    m = min(n_eligible, max(k, min(candidate_factor * k, max_candidates)))
    cand = select_top_k(scores, m, rng=rng)  # (m,) best first
    if m == k:
        return cand
    _, labels = kmeans(x_all[cand], k, rng=rng)  # (m,) cluster of each candidate
    # cand is ordered most uncertain first, so a cluster's first occurrence is its most uncertain member.
    chosen = np.sort(np.unique(labels, return_index=True)[1])  # positions into cand, best first
    if chosen.size < k:  # emptied or duplicate clusters: the next most uncertain candidates fill the batch
        rest = np.setdiff1d(np.arange(m), chosen)[: k - chosen.size]
        chosen = np.sort(np.concatenate([chosen, rest]))
    return cand[chosen[:k]]


def cluster_margin(
    probs: ArrayLike,
    embeddings: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator,
    candidate_factor: int = 10,
    max_candidates: int = 20_000,
) -> IndexArray:
    """Diverse margin: the most uncertain item of each of k clusters of the top margin candidates.

    probs (n, c), embeddings (n, d). Takes the m = min(n, max(k, min(candidate_factor * k, max_candidates))) items
    of highest margin score, k-means (k-means++ seeding, <= 10 Lloyd steps) them into k clusters in embedding
    space, and returns each cluster's most uncertain member, most uncertain first. Plain top-k margin picks
    near-copies when the batch is large; this keeps margin's choice of region and spreads the batch over it.
    A simplification of Cluster-Margin (Citovsky et al. 2021, https://arxiv.org/abs/2107.14263: HAC over the
    pool, round-robin over the clusters of the top margin items). Cost: O(n c) for the scores plus
    O(k m d) per k-means step; at 1M x 1280 with k = 1000, m = 10,000 (see docs/ml.md for the measured time).
    """
    p = _probs(probs)  # (n, c)
    x_all = _embeddings(embeddings, "embeddings")  # (n, d)
    n = x_all.shape[0]
    if p.shape[0] != n:
        raise ShapeError(f"probs has {p.shape[0]} rows, embeddings {n}")
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    return _cluster_margin_from_scores(
        margin(p),
        x_all,
        k,
        rng=rng,
        n_eligible=n,
        candidate_factor=candidate_factor,
        max_candidates=max_candidates,
    )


def weak_fraction(labeled_counts: ArrayLike, min_per_class: float) -> float:
    """max(0, 1 - mean_c n_c / min_per_class): 1 with no label, 0 once there are min_per_class labels per class.

    The mean, not each class: a class the model finds easy gets few margin picks and may stay below
    ``min_per_class`` for long; that is no reason to keep spending the batch on TypiClust (which does not target it).
    """
    counts = np.asarray(labeled_counts, dtype=np.float64)
    if counts.size == 0 or min_per_class <= 0:
        return 0.0
    return float(np.clip(1.0 - counts.mean() / min_per_class, 0.0, 1.0))


def hybrid(
    probs: ArrayLike,
    embeddings: ArrayLike,
    k: int,
    *,
    labeled_embeddings: ArrayLike | None = None,
    labeled_counts: ArrayLike | None = None,
    rng: np.random.Generator,
    min_per_class: float = 5.0,
    candidate_factor: int = 10,
    max_candidates: int = 20_000,
) -> IndexArray:
    """TypiClust while the model is weak, cluster-margin once the classes have a few labels each.

    probs (n, c), embeddings (n, d); labeled_embeddings (L, d) mark the clusters already covered;
    labeled_counts (c,) labels per class (absent: L / c for every class, L = 0 without labeled_embeddings).
    A share f = max(0, 1 - mean_c n_c / min_per_class) of the batch (rounded) goes to TypiClust's typical points
    of uncovered clusters, the rest to ``cluster_margin`` among the other items. With 1 label per class and
    min_per_class = 5 that is 80% TypiClust; from 5 labels per class on it is pure cluster-margin. Why:
    uncertainty from a head trained on one or two labels per class points at the wrong places (margin's early
    dip below random), while typical points of uncovered regions help most in that low-budget regime (Hacohen
    et al. 2022); once each class has a few labels, margin is the stronger signal. Typical items come first.
    """
    p = _probs(probs)  # (n, c)
    x_all = _embeddings(embeddings, "embeddings")  # (n, d)
    n = x_all.shape[0]
    if p.shape[0] != n:
        raise ShapeError(f"probs has {p.shape[0]} rows, embeddings {n}")
    _check_k(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    lab = None if labeled_embeddings is None else _embeddings(labeled_embeddings, "labeled_embeddings")
    if labeled_counts is None:
        n_lab = 0 if lab is None else lab.shape[0]
        counts = np.full(p.shape[1], n_lab / max(p.shape[1], 1))
    else:
        counts = np.asarray(labeled_counts, dtype=np.float64)
        if counts.shape != (p.shape[1],):
            raise ShapeError(f"labeled_counts must be ({p.shape[1]},), got shape {counts.shape}")
    k_typ = min(k, int(round(k * weak_fraction(counts, min_per_class))))
    typ = np.zeros(0, dtype=np.int64)
    if k_typ:
        typ = typiclust(x_all, k_typ, labeled_embeddings=lab, rng=rng, max_candidates=max_candidates)
    if k_typ == k:
        return typ
    scores = margin(p)
    scores[typ] = -np.inf
    rest = _cluster_margin_from_scores(
        scores,
        x_all,
        k - k_typ,
        rng=rng,
        n_eligible=n - k_typ,
        candidate_factor=candidate_factor,
        max_candidates=max_candidates,
    )
    return np.concatenate([typ, rest]).astype(np.int64)


def _pairwise_sq(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    norms = _sq_norms(x)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * (x @ x.T), 0.0), norms


# --------------------------------------------------------------------------------------------------------------
# 3. Strategies
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInputs:
    """What a strategy may look at; each array describes the same n unlabeled items.

    probs: (n, c) calibrated probabilities of the current head; embeddings: (n, d) frozen features (or the head's
    penultimate features for BADGE); labeled_embeddings: (L, d); mc_probs: (T, n, c) MC-dropout samples;
    labeled_counts: (c,) labels per class in the labeled set (how weak the model still is, for ``hybrid``).
    """

    probs: FloatArray | None = None
    embeddings: FloatArray | None = None
    labeled_embeddings: FloatArray | None = None
    mc_probs: FloatArray | None = None
    labeled_counts: IndexArray | None = None

    @property
    def n(self) -> int:
        sizes: dict[str, int] = {
            name: arr.shape[1] if name == "mc_probs" else arr.shape[0]
            for name, arr in (("probs", self.probs), ("embeddings", self.embeddings), ("mc_probs", self.mc_probs))
            if arr is not None
        }
        if not sizes:
            raise MissingInputError("no pool input given: pass probs, embeddings or mc_probs")
        if len(set(sizes.values())) > 1:
            raise ShapeError(f"pool inputs disagree on the pool size: {sizes}")
        return next(iter(sizes.values()))

    def require(self, name: str) -> FloatArray:
        arr: FloatArray | None = getattr(self, name)
        if arr is None:
            raise MissingInputError(f"this strategy needs {name}")
        return arr


class Strategy(Protocol):
    """A query strategy: ``select(k, inputs, rng=...)`` -> k distinct pool indices, best first."""

    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray: ...


@dataclass(frozen=True)
class RandomStrategy:
    name: str = "random"
    needs: tuple[str, ...] = ()

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        n = inputs.n
        _check_k(k, n)
        return rng.choice(n, size=k, replace=False).astype(np.int64)


@dataclass(frozen=True)
class UncertaintyStrategy:
    """Top-k of a score function of the probabilities (not batch-aware; cheap at any pool size)."""

    name: str
    score: Callable[[ArrayLike], FloatArray]
    needs: tuple[str, ...] = ("probs",)

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        probs = inputs.require("probs")
        _check_k(k, inputs.n)
        return select_top_k(self.score(probs), k, rng=rng)


@dataclass(frozen=True)
class BaldStrategy:
    name: str = "bald"
    needs: tuple[str, ...] = ("mc_probs",)

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        mc_probs = inputs.require("mc_probs")
        _check_k(k, inputs.n)
        return select_top_k(bald(mc_probs), k, rng=rng)


@dataclass(frozen=True)
class KCenterStrategy:
    name: str = "kcenter"
    needs: tuple[str, ...] = ("embeddings",)
    max_candidates: int = 20_000

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        embeddings = inputs.require("embeddings")
        _check_k(k, inputs.n)
        return kcenter_greedy(
            embeddings,
            k,
            labeled_embeddings=inputs.labeled_embeddings,
            rng=rng,
            max_candidates=self.max_candidates,
        )


@dataclass(frozen=True)
class BadgeStrategy:
    name: str = "badge"
    needs: tuple[str, ...] = ("probs", "embeddings")
    max_candidates: int = 20_000

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        probs, embeddings = inputs.require("probs"), inputs.require("embeddings")
        _check_k(k, inputs.n)
        return badge(probs, embeddings, k, rng=rng, max_candidates=self.max_candidates)


@dataclass(frozen=True)
class TypiClustStrategy:
    name: str = "typiclust"
    needs: tuple[str, ...] = ("embeddings",)
    max_candidates: int = 20_000

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        embeddings = inputs.require("embeddings")
        _check_k(k, inputs.n)
        return typiclust(
            embeddings,
            k,
            labeled_embeddings=inputs.labeled_embeddings,
            rng=rng,
            max_candidates=self.max_candidates,
        )


@dataclass(frozen=True)
class ClusterMarginStrategy:
    name: str = "cluster_margin"
    needs: tuple[str, ...] = ("probs", "embeddings")
    candidate_factor: int = 10
    max_candidates: int = 20_000

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        probs, embeddings = inputs.require("probs"), inputs.require("embeddings")
        _check_k(k, inputs.n)
        return cluster_margin(
            probs,
            embeddings,
            k,
            rng=rng,
            candidate_factor=self.candidate_factor,
            max_candidates=self.max_candidates,
        )


@dataclass(frozen=True)
class HybridStrategy:
    """``hybrid``: TypiClust while there are fewer than ``min_per_class`` labels per class, cluster-margin after.

    Also reads ``labeled_embeddings`` and ``labeled_counts`` when given (see ``hybrid``).
    """

    name: str = "hybrid"
    needs: tuple[str, ...] = ("probs", "embeddings")
    min_per_class: float = 5.0
    candidate_factor: int = 10
    max_candidates: int = 20_000

    def select(self, k: int, inputs: PoolInputs, *, rng: np.random.Generator) -> IndexArray:
        probs, embeddings = inputs.require("probs"), inputs.require("embeddings")
        _check_k(k, inputs.n)
        return hybrid(
            probs,
            embeddings,
            k,
            labeled_embeddings=inputs.labeled_embeddings,
            labeled_counts=inputs.labeled_counts,
            rng=rng,
            min_per_class=self.min_per_class,
            candidate_factor=self.candidate_factor,
            max_candidates=self.max_candidates,
        )


REGISTRY: dict[str, Strategy] = {
    "random": RandomStrategy(),
    "least_confidence": UncertaintyStrategy("least_confidence", least_confidence),
    "margin": UncertaintyStrategy("margin", margin),
    "entropy": UncertaintyStrategy("entropy", entropy),
    "bald": BaldStrategy(),
    "kcenter": KCenterStrategy(),
    "badge": BadgeStrategy(),
    "typiclust": TypiClustStrategy(),
    "cluster_margin": ClusterMarginStrategy(),
    "hybrid": HybridStrategy(),
}
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_STRATEGY = "hybrid"
COLD_START_STRATEGY = "typiclust"


def strategy_get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


def select(
    strategy: str,
    k: int,
    *,
    probs: ArrayLike | None = None,
    embeddings: ArrayLike | None = None,
    labeled_embeddings: ArrayLike | None = None,
    mc_probs: ArrayLike | None = None,
    labeled_counts: ArrayLike | None = None,
    rng: np.random.Generator,
) -> IndexArray:
    """Pick k items of the unlabeled pool with the named strategy; indices into the pool, best first.

    probs (n, c), embeddings (n, d), labeled_embeddings (L, d), mc_probs (T, n, c), labeled_counts (c,): pass
    what the strategy needs (``REGISTRY[name].needs``; ``hybrid`` and the geometric strategies also use the labeled
    set when given). Raises EmptyPoolError, PoolTooSmallError, MissingInputError, ShapeError, UnknownNameError.
    """
    strat = strategy_get(strategy)
    inputs = PoolInputs(
        probs=None if probs is None else _probs(probs),
        embeddings=None if embeddings is None else _embeddings(embeddings, "embeddings"),
        labeled_embeddings=None
        if labeled_embeddings is None
        else _embeddings(labeled_embeddings, "labeled_embeddings"),
        mc_probs=None if mc_probs is None else np.asarray(mc_probs, dtype=np.float32),
        labeled_counts=None if labeled_counts is None else np.asarray(labeled_counts, dtype=np.int64).reshape(-1),
    )
    return strat.select(k, inputs, rng=rng)
