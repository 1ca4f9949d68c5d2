"""Inter-annotator agreement: percent agreement, Cohen's, Fleiss' kappa, Krippendorff's alpha.

All statistics take an ``AnswerTable`` (nominal labels, any number of raters per item, missing
answers allowed) and ignore ``weight``: pass human answers only. If an annotator answered an item
more than once, only the last answer (in row order) counts.

Items with fewer than two answers carry no information about agreement and are dropped
("pairable" items, Krippendorff's term). Let n_ic be the number of answers of class c on item i and
m_i = sum_c n_ic >= 2:

    percent agreement  P = mean_i P_i,    P_i = sum_c n_ic (n_ic - 1) / (m_i (m_i - 1))
                       (the share of agreeing ordered rater pairs, averaged over items)
    Fleiss' kappa      (P - P_e) / (1 - P_e),  P_e = sum_c p_c^2,  p_c = sum_i n_ic / sum_i m_i
                       (Fleiss 1971; with varying m_i this is the usual generalisation that averages
                       P_i over items; with constant m_i it is exactly Fleiss' statistic)
    Krippendorff alpha 1 - D_o / D_e on the coincidence matrix, nominal metric (Krippendorff 2011)
    Cohen's kappa      per annotator pair, on the items both answered (Cohen 1960)

Degenerate cases return nan, never raise, and the caller decides how to show them:
no pairable item (or, for a Cohen pair, fewer than ``min_shared`` shared items); expected
agreement of 1 (every answer is the same class: chance explains everything, kappa/alpha are 0/0).

Confidence intervals: percentile bootstrap over pairable items (units), ``n_boot`` resamples
drawn from an explicit ``np.random.Generator``. Each resample is a vector of item multiplicities,
so every statistic is recomputed from weighted per-item sums (a matrix product), never by a Python
loop over items. Resamples where the statistic is nan are left out of the percentiles.

References: J. Cohen, "A Coefficient of Agreement for Nominal Scales", Educational and
Psychological Measurement 20(1), 1960. J. L. Fleiss, "Measuring nominal scale agreement among many
raters", Psychological Bulletin 76(5):378–382, 1971. K. Krippendorff, "Computing Krippendorff's
Alpha-Reliability", 2011, https://repository.upenn.edu/asc_papers/43
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mltasks.core.answers import AnswerTable

__all__ = [
    "AgreementError",
    "PairwiseKappa",
    "agreement_report",
    "bootstrap_ci",
    "cohen_kappa",
    "cohen_kappa_matrix",
    "fleiss_kappa",
    "krippendorff_alpha",
    "percent_agreement",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_EPS = 1e-12
_STATISTICS = ("percent_agreement", "fleiss_kappa", "krippendorff_alpha", "cohen_kappa_mean")
# Resamples are processed in chunks so the (chunk, n_items) multiplicity matrix stays ~32 MB.
_CHUNK_CELLS = 4_000_000


class AgreementError(ValueError):
    """Invalid argument to an agreement statistic."""


class PairwiseKappa(NamedTuple):
    """Cohen's kappa for every annotator pair. Both (n_annotators, n_annotators), symmetric.

    ``kappa[a, b]`` is nan on the diagonal, for pairs with fewer than ``min_shared`` shared items,
    and where expected agreement is 1. ``n_shared[a, b]`` counts items both answered
    (the diagonal holds the number of items a answered).
    """

    kappa: F64
    n_shared: I64


# --------------------------------------------------------------------------------------------
# per-item sufficient statistics
# --------------------------------------------------------------------------------------------


def _dedupe(table: AnswerTable) -> tuple[I64, I64, I64]:
    """Keep the last answer of each (item, annotator). Returns item, annotator, label (n',)."""
    key = table.item * max(table.n_annotators, 1) + table.annotator  # (n,)
    rev = key[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    keep = np.sort(table.n_answers - 1 - first_in_rev)
    return table.item[keep], table.annotator[keep], table.label[keep]


@dataclass(frozen=True, eq=False)
class _Units:
    """Pairable items and their class counts."""

    counts: F64  # (u, k) n_ic for pairable items
    unit_of_item: I64  # (n_items,) unit index, -1 if not pairable
    item: I64  # (n',) deduplicated answers
    annotator: I64  # (n',)
    label: I64  # (n',)


def _units(table: AnswerTable, k: int | None = None, label: I64 | None = None) -> _Units:
    item, annotator, lab = _dedupe(table)
    if label is not None:  # one-vs-rest relabelling, aligned with the deduplicated rows
        lab = label
    k = table.n_classes if k is None else k
    counts = np.bincount(item * k + lab, minlength=table.n_items * k).reshape(table.n_items, k).astype(np.float64)
    m = counts.sum(axis=1)
    pairable = m >= 2
    unit_of_item = np.full(table.n_items, -1, dtype=np.int64)
    unit_of_item[pairable] = np.arange(int(pairable.sum()))
    return _Units(counts=counts[pairable], unit_of_item=unit_of_item, item=item, annotator=annotator, label=lab)


def _item_features(counts: F64) -> F64:
    """Per-unit additive features: [P_i, m_i, sum_c n_ic(n_ic-1)/(m_i-1), n_i1..n_ik]. Shape (u, 3 + k)."""
    m = counts.sum(axis=1)  # (u,)
    same_pairs = (counts * (counts - 1)).sum(axis=1)  # (u,) ordered agreeing pairs
    p_i = same_pairs / (m * (m - 1))
    occ = same_pairs / (m - 1)  # contribution to the coincidence matrix diagonal
    return np.column_stack([p_i, m, occ, counts])


def _stats_from_sums(sums: F64, n_units: F64) -> dict[str, F64]:
    """Statistics from (B, 3 + k) summed features and (B,) unit counts. Vectorized over B."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p_sum, m_sum, occ_sum, n_c = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3:]
        percent = p_sum / n_units
        p_c = n_c / m_sum[:, None]
        p_e = (p_c**2).sum(axis=1)
        fleiss = np.where(p_e < 1.0 - _EPS, (percent - p_e) / (1.0 - p_e), np.nan)
        # Krippendorff nominal: alpha = ((n-1) sum_c o_cc - sum_c n_c(n_c-1)) / (n(n-1) - sum_c n_c(n_c-1))
        n = m_sum
        chance = (n_c * (n_c - 1)).sum(axis=1)
        den = n * (n - 1) - chance
        alpha = np.where(den > _EPS * np.maximum(n * n, 1.0), ((n - 1) * occ_sum - chance) / den, np.nan)
    empty = n_units <= 0
    for arr in (percent, fleiss, alpha):
        arr[empty] = np.nan
    return {"percent_agreement": percent, "fleiss_kappa": fleiss, "krippendorff_alpha": alpha}


def _point(table: AnswerTable, name: str) -> float:
    u = _units(table)
    feats = _item_features(u.counts)
    sums = feats.sum(axis=0)[None, :]
    return float(_stats_from_sums(sums, np.array([float(u.counts.shape[0])]))[name][0])


def percent_agreement(table: AnswerTable) -> float:
    """Mean share of agreeing rater pairs per pairable item; nan with no pairable item."""
    return _point(table, "percent_agreement")


def fleiss_kappa(table: AnswerTable) -> float:
    """Fleiss' kappa (varying raters per item: P_i averaged over pairable items); nan if degenerate."""
    return _point(table, "fleiss_kappa")


def krippendorff_alpha(table: AnswerTable) -> float:
    """Krippendorff's alpha, nominal metric, missing answers allowed; nan if degenerate."""
    return _point(table, "krippendorff_alpha")


# --------------------------------------------------------------------------------------------
# Cohen's kappa
# --------------------------------------------------------------------------------------------


def _kappa_from_cells(cells: F64) -> tuple[F64, F64]:
    """Cohen's kappa from (..., k, k) contingency tables. Returns (kappa (...), n (...))."""
    n = cells.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_o = np.trace(cells, axis1=-2, axis2=-1) / n
        p_e = (cells.sum(axis=-1) * cells.sum(axis=-2)).sum(axis=-1) / (n * n)
        kappa = np.where((n > 0) & (p_e < 1.0 - _EPS), (p_o - p_e) / (1.0 - p_e), np.nan)
    return kappa, n


def cohen_kappa(labels_a: ArrayLike, labels_b: ArrayLike, *, n_classes: int | None = None) -> float:
    """Cohen's kappa of two aligned (n,) integer label vectors; nan if empty or p_e = 1."""
    a = np.asarray(labels_a, dtype=np.int64)
    b = np.asarray(labels_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise AgreementError(f"labels_a and labels_b must be aligned 1-D arrays, got {a.shape} and {b.shape}")
    if a.size and (min(int(a.min()), int(b.min())) < 0):
        raise AgreementError("labels must be >= 0")
    k = n_classes if n_classes is not None else (int(max(a.max(), b.max())) + 1 if a.size else 1)
    cells = np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(np.float64)
    return float(_kappa_from_cells(cells)[0])


@dataclass(frozen=True, eq=False)
class _Pairs:
    """Every (unit, annotator a < annotator b) co-annotation, as flat arrays of length P."""

    pair: I64  # (P,) index into pair_ids
    pair_ids: I64  # (n_pairs,) a * n_annotators + b
    unit: I64  # (P,) pairable unit
    cell: I64  # (P,) label_a * k + label_b


def _pairs(u: _Units, n_annotators: int, k: int) -> _Pairs:
    unit = u.unit_of_item[u.item]
    keep = unit >= 0
    unit, annotator, label = unit[keep], u.annotator[keep], u.label[keep]
    order = np.argsort(unit, kind="stable")
    unit, annotator, label = unit[order], annotator[order], label[order]
    # Self-join within each unit without a Python loop: row r is paired with every row of its
    # unit; with m answers per unit that is m^2 candidate pairs, of which a < b are kept.
    sizes = np.bincount(unit, minlength=u.counts.shape[0])  # (u,)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    reps = sizes[unit]  # (n',) pairs per row
    left = np.repeat(np.arange(unit.size), reps)
    offset = np.arange(left.size) - np.repeat(np.cumsum(reps) - reps, reps)
    right = starts[unit[left]] + offset
    a, b = annotator[left], annotator[right]
    sel = a < b
    left, right, a, b = left[sel], right[sel], a[sel], b[sel]
    pair_key = a * n_annotators + b
    pair_ids, pair = np.unique(pair_key, return_inverse=True)
    return _Pairs(
        pair=pair.astype(np.int64),
        pair_ids=pair_ids.astype(np.int64),
        unit=unit[left],
        cell=label[left] * k + label[right],
    )


def _pair_kappas(p: _Pairs, k: int, unit_weight: F64 | None = None) -> tuple[F64, F64]:
    """Kappa and shared count per observed pair; ``unit_weight`` (u,) = bootstrap multiplicities."""
    w = None if unit_weight is None else unit_weight[p.unit]
    cells = np.bincount(p.pair * (k * k) + p.cell, weights=w, minlength=p.pair_ids.size * k * k).astype(np.float64)
    return _kappa_from_cells(cells.reshape(p.pair_ids.size, k, k))


def cohen_kappa_matrix(table: AnswerTable, *, min_shared: int = 2) -> PairwiseKappa:
    """Cohen's kappa for every annotator pair on the items both answered. See ``PairwiseKappa``."""
    if min_shared < 1:
        raise AgreementError(f"min_shared must be >= 1, got {min_shared}")
    n_a, k = table.n_annotators, max(table.n_classes, 1)
    u = _units(table, k=k)
    p = _pairs(u, n_a, k)
    kappa_p, n_p = _pair_kappas(p, k)
    kappa = np.full((n_a, n_a), np.nan)
    shared = np.zeros((n_a, n_a), dtype=np.int64)
    a, b = np.divmod(p.pair_ids, max(n_a, 1))
    kappa_p = np.where(n_p >= min_shared, kappa_p, np.nan)
    kappa[a, b] = kappa[b, a] = kappa_p
    shared[a, b] = shared[b, a] = n_p.astype(np.int64)
    per_annotator = np.bincount(u.annotator, minlength=n_a)
    shared[np.arange(n_a), np.arange(n_a)] = per_annotator
    return PairwiseKappa(kappa=kappa, n_shared=shared)


def _mean_pair_kappa(kappa_p: F64, n_p: F64, min_shared: int) -> F64:
    """Mean kappa over pairs with >= min_shared shared items, for (B, n_pairs) arrays."""
    ok = (n_p >= min_shared) & np.isfinite(kappa_p)
    n_ok = ok.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        mean: F64 = np.where(ok, kappa_p, 0.0).sum(axis=-1) / np.where(n_ok > 0, n_ok, np.nan)
    return mean


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------


def _multiplicities(rng: np.random.Generator, n_boot: int, n_units: int, width: int) -> list[F64]:
    """Bootstrap resamples as (chunk, n_units) multiplicity matrices (each row sums to n_units).

    ``width`` is the widest per-resample array the caller builds, to size the chunks."""
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n_units, width, 1)))
    out = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n_units, size=(b, n_units))  # (b, u)
        flat = np.bincount((draws + (np.arange(b) * n_units)[:, None]).ravel(), minlength=b * n_units)
        out.append(flat.reshape(b, n_units).astype(np.float64))
        done += b
    return out


@dataclass(frozen=True, eq=False)
class _Block:
    """Everything one set of statistics needs, for the whole project or one class versus rest."""

    k: int
    feats: F64  # (u, 3 + k) per-unit additive features
    pairs: _Pairs
    pc_unit: I64  # (P,) unit of each pair-row, rows sorted by (pair, cell)
    pc_starts: I64  # (n_pc,) segment starts in pc_order
    pc_flat: I64  # (n_pc,) pair * k * k + cell of each segment


def _block(table: AnswerTable, k: int, label: I64 | None = None) -> _Block:
    u = _units(table, k=k, label=label)
    p = _pairs(u, table.n_annotators, k)
    flat = p.pair * (k * k) + p.cell  # (P,)
    order = np.argsort(flat, kind="stable")
    sorted_flat = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]]) if flat.size else np.zeros(0, np.int64)
    return _Block(
        k=k,
        feats=_item_features(u.counts),
        pairs=p,
        pc_unit=p.unit[order].astype(np.int64),
        pc_starts=starts.astype(np.int64),
        pc_flat=sorted_flat[starts].astype(np.int64),
    )


def _block_point(blk: _Block, min_shared: int) -> dict[str, float]:
    n_units = float(blk.feats.shape[0])
    stats = _stats_from_sums(blk.feats.sum(axis=0)[None, :], np.array([n_units]))
    point = {name: float(v[0]) for name, v in stats.items()}
    kappa_p, n_p = _pair_kappas(blk.pairs, blk.k)
    point["cohen_kappa_mean"] = float(_mean_pair_kappa(kappa_p, n_p, min_shared))
    return point


def _block_replicates(blk: _Block, mult: F64, min_shared: int) -> dict[str, F64]:
    """Statistics for a (b, u) chunk of resample multiplicities; each value (b,)."""
    mult_t = np.ascontiguousarray(mult.T)  # (u, b): row gathers below copy contiguous rows
    b = mult.shape[0]
    out = _stats_from_sums((blk.feats.T @ mult_t).T, np.full(b, float(blk.feats.shape[0])))
    n_pairs, kk = blk.pairs.pair_ids.size, blk.k * blk.k
    cells = np.zeros((n_pairs * kk, b))
    if blk.pc_unit.size:
        # Per-pair contingency tables under each resample: gather the multiplicity of every
        # co-annotation's unit, then sum contiguous (pair, cell) segments with reduceat.
        gathered = mult_t[blk.pc_unit]  # (P, b)
        cells[blk.pc_flat] = np.add.reduceat(gathered, blk.pc_starts, axis=0)
    kb, nb = _kappa_from_cells(np.ascontiguousarray(cells.T).reshape(b, n_pairs, blk.k, blk.k))
    out["cohen_kappa_mean"] = _mean_pair_kappa(kb, nb, min_shared)
    return out


def _bootstrap(blocks: list[_Block], *, n_boot: int, rng: np.random.Generator, min_shared: int) -> list[dict[str, F64]]:
    """(n_boot,) replicates of every statistic of every block, all from the same resamples.

    All blocks share the pairable units (pairability depends on answer counts, not on labels),
    so one set of resamples serves the project and every class: cheaper, and the per-class
    intervals describe the same resampled data sets.
    """
    reps: list[dict[str, list[F64]]] = [{name: [] for name in _STATISTICS} for _ in blocks]
    n_units = blocks[0].feats.shape[0] if blocks else 0
    if n_units > 0 and n_boot > 0:
        width = max(blk.pairs.unit.size for blk in blocks)
        for mult in _multiplicities(rng, n_boot, n_units, width):
            for blk, rep in zip(blocks, reps, strict=True):
                for name, v in _block_replicates(blk, mult, min_shared).items():
                    rep[name].append(v)
    return [{name: (np.concatenate(v) if v else np.zeros(0)) for name, v in rep.items()} for rep in reps]


def _interval(replicates: F64, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _check_boot(n_boot: int, level: float, rng: Any) -> None:
    if n_boot < 0:
        raise AgreementError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise AgreementError(f"level must lie in (0, 1), got {level}")
    if not isinstance(rng, np.random.Generator):
        raise AgreementError("rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed))")


def bootstrap_ci(
    table: AnswerTable,
    statistic: str,
    *,
    rng: np.random.Generator,
    n_boot: int = 1000,
    level: float = 0.95,
    min_shared: int = 2,
) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap CI over pairable items for one statistic.

    ``statistic`` is one of percent_agreement, fleiss_kappa, krippendorff_alpha, cohen_kappa_mean
    (the mean of pairwise kappas over pairs with >= ``min_shared`` shared items).
    """
    if statistic not in _STATISTICS:
        raise AgreementError(f"statistic must be one of {_STATISTICS}, got {statistic!r}")
    _check_boot(n_boot, level, rng)
    blk = _block(table, max(table.n_classes, 1))
    (reps,) = _bootstrap([blk], n_boot=n_boot, rng=rng, min_shared=min_shared)
    lo, hi = _interval(reps[statistic], level)
    return _block_point(blk, min_shared)[statistic], lo, hi


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


def _summary(point: dict[str, float], reps: dict[str, F64], level: float) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in _STATISTICS:
        lo, hi = _interval(reps[name], level)
        out[name] = {"value": _json_float(point[name]), "ci_low": _json_float(lo), "ci_high": _json_float(hi)}
    return out


def agreement_report(
    table: AnswerTable,
    *,
    n_boot: int = 1000,
    rng: np.random.Generator,
    level: float = 0.95,
    min_shared: int = 2,
) -> dict[str, Any]:
    """Every agreement statistic with a bootstrap CI, per project and per class; JSON-serialisable.

    Per class c the labels are binarised (c versus the rest) and the same statistics computed, so
    "agreement on class c" reads as how consistently annotators pick or avoid c. nan becomes None.

    Shape::

        {"n_items", "n_pairable_items", "n_answers", "n_annotators", "n_classes", "n_boot", "level",
         "project": {stat: {"value", "ci_low", "ci_high"}, ...},
         "per_class": [{"class": c, stat: {...}, ...}, ...],
         "pairwise": [{"a", "b", "kappa", "n_shared"}, ...]}      # pairs with >= 1 shared item

    Cost: O(n_boot * n_items * (k + 3)) per statistic block, k + 1 blocks; at 10^5 pairable items
    and n_boot=1000, a few seconds per block.
    """
    _check_boot(n_boot, level, rng)
    u_all = _units(table)
    blocks = [_block(table, max(table.n_classes, 1))]
    blocks += [_block(table, 2, label=(u_all.label == c).astype(np.int64)) for c in range(table.n_classes)]
    replicates = _bootstrap(blocks, n_boot=n_boot, rng=rng, min_shared=min_shared)
    summaries = [
        _summary(_block_point(blk, min_shared), rep, level) for blk, rep in zip(blocks, replicates, strict=True)
    ]
    per_class = [{"class": c, **summaries[c + 1]} for c in range(table.n_classes)]
    pairwise = cohen_kappa_matrix(table, min_shared=min_shared)
    a_idx, b_idx = np.nonzero(np.triu(pairwise.n_shared, k=1))
    pairs = [
        {
            "a": int(a),
            "b": int(b),
            "kappa": _json_float(float(pairwise.kappa[a, b])),
            "n_shared": int(pairwise.n_shared[a, b]),
        }
        for a, b in zip(a_idx, b_idx, strict=True)
    ]
    return {
        "n_items": table.n_items,
        "n_pairable_items": int(u_all.counts.shape[0]),
        "n_answers": int(u_all.item.size),
        "n_annotators": table.n_annotators,
        "n_classes": table.n_classes,
        "n_boot": n_boot,
        "level": level,
        "project": summaries[0],
        "per_class": per_class,
        "pairwise": pairs,
    }
