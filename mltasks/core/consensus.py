"""Answer aggregation: majority vote, Dawid–Skene, one-coin Dawid–Skene and MACE.

Every aggregator has the crowd-kit / sklearn shape: the constructor stores hyperparameters,
``fit(table, *, gold=None)`` returns ``self``, fitted attributes end in ``_``:

    probas_      (n_items, n_classes)        posterior over the true class of each item
    labels_      (n_items,)                  argmax of probas_ (ties: lowest class index)
    confidence_  (n_items,)                  max of probas_
    no_answer_   (n_items,) bool             item had no (positive-weight) answer: probas_ = priors_
    priors_      (n_classes,)                class priors
    confusion_   (n_annotators, k, k)        confusion_[a, j, l] = P(annotator a answers l | true class j)
    accuracy_    (n_annotators,)             estimated accuracy (see each class)
    n_iter_, log_likelihood_history_         EM bookkeeping (majority vote: 0 and [])

Everything is vectorized over the long-format ``AnswerTable``: one E-step or M-step is k calls
of ``np.bincount`` over the n answers, never a Python loop over answers or items.

``gold`` is ``{item_index: class_index}``. Gold items are clamped: their posterior is one-hot on the
known class at initialisation and after every E-step, so they teach the annotator parameters but
are never overruled.

Per-answer ``weight`` (``AnswerTable.weight``) multiplies both the answer's log-likelihood in the
E-step and its counts in the M-step (a tempered likelihood). Use it to add the model as a weak
voter: its answers are rows of an extra annotator with weight e.g. 0.3, so it can tip near-ties
but never outvote a confident human consensus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from mltasks.core.answers import AnswerTable, AnswerTableError, IdMaps

__all__ = [
    "MACE",
    "AnswerTable",
    "AnswerTableError",
    "ConsensusError",
    "DawidSkene",
    "GoldError",
    "IdMaps",
    "MajorityVote",
    "NotFittedError",
    "OneCoinDawidSkene",
    "annotator_confusion",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_TINY = 1e-300  # floor inside log(): keeps log() finite when smoothing=0


class ConsensusError(ValueError):
    """Base class for aggregation errors."""


class NotFittedError(ConsensusError):
    """A fitted attribute was asked for before ``fit``."""


class GoldError(ConsensusError):
    """Gold answers refer to an unknown item or class."""


class HyperparameterError(ConsensusError):
    """A hyperparameter is out of range."""


# --------------------------------------------------------------------------------------------
# shared preparation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Prepared:
    """Derived, read-only arrays shared by E- and M-steps (computed once per fit)."""

    item: I64  # (n,)
    annotator: I64  # (n,)
    label: I64  # (n,)
    w: F64  # (n,)
    unit_weights: bool  # every weight is 1: skip the multiplications
    n_items: int
    n_annotators: int
    k: int
    item_label: I64  # (n,) item * k + label: flat index into (n_items, k)
    annotator_label: I64  # (n,) annotator * k + label: flat index into (n_annotators, k)
    answered: NDArray[np.bool_]  # (n_items,) item has positive answer weight
    gold_items: I64  # (g,)
    gold_classes: I64  # (g,)
    answer_weight: F64  # (n_annotators,) sum of weights per annotator
    total_weight: float

    @cached_property
    def by_item(self) -> _Segments:
        """Answers grouped by item, reading rows annotator*k + label (E-step of Dawid–Skene)."""
        return _Segments.build(self.item, self.annotator_label, self.w, self.unit_weights, self.n_items)

    @cached_property
    def by_annotator_label(self) -> _Segments:
        """Answers grouped by (annotator, label), reading rows item (M-step of Dawid–Skene)."""
        n_keys = self.n_annotators * self.k
        return _Segments.build(self.annotator_label, self.item, self.w, self.unit_weights, n_keys)


@dataclass(frozen=True, eq=False)
class _Segments:
    """Answers sorted by a key, for ``np.add.reduceat`` over (n, k) blocks.

    Gathering whole rows of a small (keys, k) table and summing contiguous segments is several
    times faster than k separate ``np.bincount`` calls over strided columns.
    """

    rows: I64  # (n,) per answer, sorted by key: the row of the summed table it reads
    starts: I64  # (n_present,) first sorted position of each present key
    present: I64  # (n_present,) the keys that occur
    w: F64 | None  # (n,) weights in sorted order, None when all are 1
    n_keys: int

    @classmethod
    def build(cls, key: I64, rows: I64, w: F64, unit_weights: bool, n_keys: int) -> _Segments:
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        if sorted_key.size:
            starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]]).astype(np.int64)
        else:
            starts = np.zeros(0, dtype=np.int64)
        return cls(
            rows=rows[order],
            starts=starts,
            present=sorted_key[starts],
            w=None if unit_weights else w[order],
            n_keys=n_keys,
        )

    def sum_rows(self, table: F64) -> F64:
        """out[key] = sum over the answers with that key of w * table[row]. Shape (n_keys, k)."""
        out = np.zeros((self.n_keys, table.shape[1]))
        if self.rows.size:
            gathered = np.take(table, self.rows, axis=0)  # (n, k): whole rows; take beats fancy indexing 5x
            if self.w is not None:
                gathered *= self.w[:, None]
            out[self.present] = np.add.reduceat(gathered, self.starts, axis=0)
        return out


def _prepare(table: AnswerTable, gold: Mapping[int, int] | None) -> _Prepared:
    if not isinstance(table, AnswerTable):
        raise TypeError(f"fit expects an AnswerTable, got {type(table).__name__}")
    k = table.n_classes
    w = table.weights()
    gi = np.fromiter((int(i) for i in gold), dtype=np.int64) if gold else np.zeros(0, dtype=np.int64)
    gc = np.fromiter((int(c) for c in gold.values()), dtype=np.int64) if gold else np.zeros(0, dtype=np.int64)
    if gi.size and (int(gi.min()) < 0 or int(gi.max()) >= table.n_items):
        raise GoldError(f"gold item indices must lie in [0, {table.n_items})")
    if gc.size and (int(gc.min()) < 0 or int(gc.max()) >= k):
        raise GoldError(f"gold class indices must lie in [0, {k})")
    item_weight = _bincount(table.item, weights=w, minlength=table.n_items)  # (n_items,)
    return _Prepared(
        item=table.item,
        annotator=table.annotator,
        label=table.label,
        w=w,
        unit_weights=table.weight is None or bool(np.all(w == 1.0)),
        n_items=table.n_items,
        n_annotators=table.n_annotators,
        k=k,
        item_label=table.item * k + table.label,
        annotator_label=table.annotator * k + table.label,
        answered=item_weight > 0,
        gold_items=gi,
        gold_classes=gc,
        answer_weight=_bincount(table.annotator, weights=w, minlength=table.n_annotators),
        total_weight=float(w.sum()),
    )


def _bincount(x: I64, weights: F64 | None = None, minlength: int = 0) -> F64:
    """np.bincount that always returns float64 (it returns int64 for empty input)."""
    return np.bincount(x, weights=weights, minlength=minlength).astype(np.float64, copy=False)


def _vote_counts(p: _Prepared) -> F64:
    """Weighted votes per item and class. Shape (n_items, k)."""
    flat = _bincount(p.item_label, weights=p.w, minlength=p.n_items * p.k)
    return flat.reshape(p.n_items, p.k)


def _clamp_gold(p: _Prepared, probas: F64) -> None:
    if p.gold_items.size:
        probas[p.gold_items] = 0.0
        probas[p.gold_items, p.gold_classes] = 1.0


def _row_reduce(x: F64, op: np.ufunc) -> F64:
    """op.reduce over axis 1 of (n, k), as k - 1 column-wise ops when k is small.

    numpy's axis-1 reduction of short rows pays a per-row overhead; k whole-column passes
    are 3-5x faster for the handful of classes a labeling project has.
    """
    if x.shape[1] > 16 or x.shape[1] == 0:
        out: F64 = op.reduce(x, axis=1)
        return out
    acc = x[:, 0].copy()
    for j in range(1, x.shape[1]):
        op(acc, x[:, j], out=acc)
    return acc


def _softmax_rows(log_t: F64) -> tuple[F64, F64]:
    """Row-wise softmax in log space, in place. Returns (probas, log normaliser per row)."""
    m = _row_reduce(log_t, np.maximum)  # (n_items,)
    e = log_t
    e -= m[:, None]
    np.exp(e, out=e)
    s = _row_reduce(e, np.add)
    e /= s[:, None]
    np.log(s, out=s)
    s += m
    return e, s


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise HyperparameterError(f"{name} must lie in (0, 1), got {value}")


def annotator_confusion(table: AnswerTable, reference: NDArray[np.integer[Any]], mask: Any = None) -> F64:
    """Weighted counts of (reference label, given label) per annotator. Shape (n_annotators, k, k).

    ``reference`` is (n_items,) class indices (gold or consensus); ``mask`` (n_items,) bool keeps
    only some items (e.g. gold items). ``counts[a].trace() / counts[a].sum()`` is annotator a's
    accuracy against the reference.
    """
    k = table.n_classes
    ref = np.asarray(reference, dtype=np.int64)
    if ref.shape != (table.n_items,):
        raise ConsensusError(f"reference must have shape ({table.n_items},), got {ref.shape}")
    w = table.weights()
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)[table.item]  # (n,)
        w = np.where(keep, w, 0.0)
    cell = (table.annotator * k + ref[table.item]) * k + table.label  # (n,)
    flat = _bincount(cell, weights=w, minlength=table.n_annotators * k * k)
    return flat.reshape(table.n_annotators, k, k)


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Aggregator:
    probas_: F64 = field(init=False, repr=False)
    labels_: I64 = field(init=False, repr=False)
    confidence_: F64 = field(init=False, repr=False)
    no_answer_: NDArray[np.bool_] = field(init=False, repr=False)
    priors_: F64 = field(init=False, repr=False)
    confusion_: F64 = field(init=False, repr=False)
    accuracy_: F64 = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)
    log_likelihood_history_: list[float] = field(init=False, repr=False)

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> _Aggregator:
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not hasattr(self, "probas_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(table) first")

    def predict_proba(self) -> F64:
        """Posterior over classes per item. Shape (n_items, n_classes)."""
        self._require_fitted()
        return self.probas_

    def predict(self) -> I64:
        """Consensus class per item. Shape (n_items,)."""
        self._require_fitted()
        return self.labels_

    @property
    def confidence(self) -> F64:
        """Max posterior per item. Shape (n_items,)."""
        self._require_fitted()
        return self.confidence_

    def _finish(self, p: _Prepared, probas: F64, priors: F64, confusion: F64) -> None:
        """Set the common fitted attributes from final posteriors and parameters."""
        probas[~p.answered] = priors  # no evidence: the prior, flagged in no_answer_
        _clamp_gold(p, probas)
        self.probas_ = probas
        self.labels_ = probas.argmax(axis=1).astype(np.int64) if p.k else np.zeros(p.n_items, dtype=np.int64)
        self.confidence_ = probas.max(axis=1) if p.k else np.zeros(p.n_items)
        self.no_answer_ = ~p.answered
        self.priors_ = priors
        self.confusion_ = confusion
        # Accuracy on the project's class mix: sum_j P(class j) P(correct | class j).
        diag = np.diagonal(confusion, axis1=1, axis2=2) if p.k else np.zeros((p.n_annotators, 0))
        self.accuracy_ = diag @ priors


# --------------------------------------------------------------------------------------------
# majority vote
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class MajorityVote(_Aggregator):
    """(Weighted) majority vote. Posterior = vote shares.

    Ties between classes with equal (weighted) votes are broken deterministically:
    ``tie_break="prior"`` (default) picks the class with the most votes over the whole project,
    then the lowest class index; ``tie_break="lowest"`` picks the lowest class index.
    ``probas_`` keeps the exact shares (a 2–2 tie reads 0.5/0.5) while ``labels_`` carries the
    tie-break, so ``labels_`` may differ from ``probas_.argmax(1)`` only on exact ties.

    ``confusion_[a]`` is annotator a's answers against the consensus label, row-normalised (a
    row with no evidence is uniform); ``accuracy_[a]`` is the (weighted) fraction of a's answers
    equal to the consensus label, including a's own vote, and nan for an annotator with no answers.
    """

    tie_break: Literal["prior", "lowest"] = "prior"

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> MajorityVote:
        if self.tie_break not in ("prior", "lowest"):
            raise HyperparameterError(f"tie_break must be 'prior' or 'lowest', got {self.tie_break!r}")
        p = _prepare(table, gold)
        k = p.k
        votes = _vote_counts(p)  # (n_items, k)
        total = votes.sum(axis=0)  # (k,)
        priors = total / total.sum() if total.sum() > 0 else np.full(k, 1.0 / max(k, 1))
        item_total = votes.sum(axis=1, keepdims=True)  # (n_items, 1)
        probas = np.divide(votes, item_total, out=np.zeros_like(votes), where=item_total > 0)

        if k:
            # Ties: compare with a tolerance (weighted votes are floats), then rank tied classes by
            # project-wide votes; argmax returns the first (lowest) index among equal keys.
            top = votes.max(axis=1, keepdims=True)
            tied = votes >= top - 1e-9 * np.maximum(top, 1.0)  # (n_items, k)
            rank = total if self.tie_break == "prior" else np.zeros(k)
            labels = np.where(tied, rank[None, :], -np.inf).argmax(axis=1).astype(np.int64)
            labels[~p.answered] = int(np.argmax(priors))
            if p.gold_items.size:
                labels[p.gold_items] = p.gold_classes
        else:
            labels = np.zeros(p.n_items, dtype=np.int64)

        self._finish(p, probas, priors, np.zeros((p.n_annotators, k, k)))
        self.labels_ = labels
        counts = annotator_confusion(table, labels)  # (n_annotators, k, k)
        rows = counts.sum(axis=2, keepdims=True)
        self.confusion_ = np.divide(counts, rows, out=np.full_like(counts, 1.0 / max(k, 1)), where=rows > 0)
        answered_weight = counts.sum(axis=(1, 2))
        correct = np.trace(counts, axis1=1, axis2=2)
        self.accuracy_ = np.divide(
            correct, answered_weight, out=np.full(p.n_annotators, np.nan), where=answered_weight > 0
        )
        self.n_iter_ = 0
        self.log_likelihood_history_ = []
        return self


# --------------------------------------------------------------------------------------------
# EM family
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _EMAggregator(_Aggregator):
    """EM driver shared by Dawid–Skene, one-coin Dawid–Skene and MACE.

    Subclasses implement ``_m_step(T, state) -> state``, ``_e_step(state) -> (log_lik (n_items, k),
    log_prior_of_params)`` and ``_confusion(state)``. The driver owns class priors, gold clamping,
    items with no answers and convergence.
    """

    max_iter: int = 100
    tol: float = 1e-6
    smoothing: float = 2.0
    prior_smoothing: float = 1.0

    def _validate(self) -> None:
        if self.max_iter < 1:
            raise HyperparameterError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.tol < 0:
            raise HyperparameterError(f"tol must be >= 0, got {self.tol}")
        if self.smoothing < 0 or self.prior_smoothing < 0:
            raise HyperparameterError("smoothing and prior_smoothing must be >= 0")

    def _m_step(self, p: _Prepared, t: F64, state: Any) -> Any:
        raise NotImplementedError

    def _e_step(self, p: _Prepared, state: Any) -> tuple[F64, float]:
        raise NotImplementedError

    def _confusion(self, p: _Prepared, state: Any) -> F64:
        raise NotImplementedError

    def _after_fit(self, p: _Prepared, state: Any) -> None:
        """Hook for model-specific fitted attributes."""

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> _EMAggregator:
        self._validate()
        p = _prepare(table, gold)
        k = p.k
        if k == 0:
            self._finish(p, np.zeros((p.n_items, 0)), np.zeros(0), np.zeros((p.n_annotators, 0, 0)))
            self.n_iter_, self.log_likelihood_history_ = 0, []
            return self

        # Initialise from (weighted) majority-vote shares, as Dawid & Skene and crowd-kit do.
        votes = _vote_counts(p)  # (n_items, k)
        item_total = votes.sum(axis=1, keepdims=True)
        t = np.divide(votes, item_total, out=np.full_like(votes, 1.0 / k), where=item_total > 0)
        _clamp_gold(p, t)
        informative = p.answered.copy()
        informative[p.gold_items] = True  # gold items inform the prior even without answers
        # Boolean-mask passes over (n_items, k) cost as much as an E-step; skip them when every
        # item has answers (the common case).
        all_informative = bool(informative.all())
        all_answered = bool(p.answered.all())

        history: list[float] = []
        state: Any = None
        priors = np.full(k, 1.0 / k)
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            # M-step: class priors (Dirichlet pseudo-count prior_smoothing per class) + annotator params.
            class_mass = t.sum(axis=0) if all_informative else t[informative].sum(axis=0)  # (k,)
            priors = (class_mass + self.prior_smoothing) / (class_mass.sum() + k * self.prior_smoothing)
            if not np.all(np.isfinite(priors)):  # no informative item and prior_smoothing == 0
                priors = np.full(k, 1.0 / k)
            state = self._m_step(p, t, state)

            # E-step in log space: a product of hundreds of probabilities underflows float64,
            # a sum of their logs does not.
            log_t, log_param_prior = self._e_step(p, state)  # (n_items, k), float
            log_t += np.log(np.maximum(priors, _TINY))[None, :]
            # Observed-data log-likelihood of the answers + log prior of the parameters: the MAP
            # objective EM increases monotonically. Gold items contribute their known class only.
            gold_ll = log_t[p.gold_items, p.gold_classes] if p.gold_items.size else None
            t, ll_items = _softmax_rows(log_t)
            if gold_ll is not None:
                ll_items[p.gold_items] = gold_ll
            objective = float(ll_items.sum() if all_informative else ll_items[informative].sum()) + log_param_prior
            objective += self.prior_smoothing * float(np.log(np.maximum(priors, _TINY)).sum())
            if not all_answered:
                t[~p.answered] = priors
            _clamp_gold(p, t)
            history.append(objective)
            # tol is on the change of the objective per unit of answer weight (scale-free, like
            # sklearn's GaussianMixture), so the same tol suits 100 and 10^6 answers.
            if len(history) > 1 and abs(history[-1] - history[-2]) <= self.tol * max(p.total_weight, 1.0):
                break

        self._finish(p, t, priors, self._confusion(p, state))
        self.n_iter_ = n_iter
        self.log_likelihood_history_ = history
        self._after_fit(p, state)
        return self


def _diagonal_prior(k: int, diagonal: float) -> F64:
    """(k, k) row-stochastic matrix with ``diagonal`` on the diagonal, the rest spread evenly."""
    if k == 1:
        return np.ones((1, 1))
    m = np.full((k, k), (1.0 - diagonal) / (k - 1))
    np.fill_diagonal(m, diagonal)
    return m


@dataclass(eq=False)
class DawidSkene(_EMAggregator):
    """Dawid & Skene (1979) EM: true-class posteriors and a full confusion matrix per annotator.

    Model: item i has a latent class z_i ~ Categorical(priors); annotator a answers l with
    probability pi[a, z_i, l], independently across answers. EM alternates

        E-step  log T[i, j] = log priors[j] + sum_{answers (i, a, l)} w * log pi[a, j, l]
        M-step  pi[a, j, l] ∝ sum_{answers (i, a, l)} w * T[i, j] + smoothing * M[j, l]

    starting from majority-vote shares. Without the prior a new annotator with one answer gets a
    confusion row of exactly one-hot, i.e. log pi = 0 vs -inf, and overrules everyone. The
    Dirichlet MAP prior ``smoothing * M`` (M has ``prior_diagonal`` on the diagonal, the rest spread
    evenly) acts like ``smoothing`` imagined answers per true class from a moderately good
    annotator: negligible after tens of answers, decisive after one.

    Shapes: confusion_ (n_annotators, k, k) with rows summing to 1; accuracy_ (n_annotators,) =
    sum_j priors_[j] * confusion_[a, j, j].

    Reference: A. P. Dawid and A. M. Skene, "Maximum Likelihood Estimation of Observer Error-Rates
    Using the EM Algorithm", Journal of the Royal Statistical Society C 28(1):20–28, 1979.
    https://doi.org/10.2307/2346806
    """

    # Half an imagined answer per row: enough to keep log() finite and a one-answer reader modest,
    # small enough to cost nothing on the real crowd sets (docs/consensus.md).
    smoothing: float = 0.5
    prior_diagonal: float = 0.7

    def _validate(self) -> None:
        super()._validate()
        _check_fraction("prior_diagonal", self.prior_diagonal)

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> DawidSkene:
        super().fit(table, gold=gold)
        return self

    def _m_step(self, p: _Prepared, t: F64, state: Any) -> F64:
        k = p.k
        # by_al[a*k + l, j] = sum over a's answers l of w * T[item, j]; counts[a, j, l] is its transpose.
        by_al = p.by_annotator_label.sum_rows(t)  # (n_annotators * k, k)
        counts = np.ascontiguousarray(by_al.reshape(p.n_annotators, k, k).transpose(0, 2, 1))
        counts += self.smoothing * _diagonal_prior(k, self.prior_diagonal)[None, :, :]
        rows = counts.sum(axis=2, keepdims=True)
        pi: F64 = np.divide(counts, rows, out=np.full_like(counts, 1.0 / k), where=rows > 0)
        return pi

    def _e_step(self, p: _Prepared, state: Any) -> tuple[F64, float]:
        pi: F64 = state
        k = p.k
        log_pi = np.log(np.maximum(pi, _TINY))  # (n_annotators, k_true, k_given)
        # Row (a*k + l) of by_answer holds log pi[a, :, l]: an answer's log-likelihood under every
        # true class at once. Summing those rows per item is the whole E-step.
        by_answer = np.ascontiguousarray(log_pi.transpose(0, 2, 1).reshape(p.n_annotators * k, k))
        log_lik = p.by_item.sum_rows(by_answer)  # (n_items, k)
        log_param_prior = float((self.smoothing * _diagonal_prior(k, self.prior_diagonal) * log_pi).sum())
        return log_lik, log_param_prior

    def _confusion(self, p: _Prepared, state: Any) -> F64:
        confusion: F64 = state
        return confusion


@dataclass(eq=False)
class OneCoinDawidSkene(_EMAggregator):
    """Dawid–Skene with one accuracy per annotator ("one-coin"): errors spread uniformly.

    pi[a, j, l] = acc[a] if l == j else (1 - acc[a]) / (k - 1). One parameter per annotator, so
    it needs fewer answers per annotator than the full model but cannot learn class-specific
    confusions (e.g. "over-calls class 2"). M-step:

        acc[a] = (sum_{answers of a} w * T[i, l] + smoothing * prior_diagonal) / (sum w + smoothing)

    (a Beta prior with mean ``prior_diagonal``). accuracy_ equals acc.

    Reference: Y. Zhang, X. Chen, D. Zhou, M. I. Jordan, "Spectral Methods Meet EM: A Provably
    Optimal Algorithm for Crowdsourcing", NeurIPS 2014 (the one-coin model, their section 2).
    """

    prior_diagonal: float = 0.7

    def _validate(self) -> None:
        super()._validate()
        _check_fraction("prior_diagonal", self.prior_diagonal)

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> OneCoinDawidSkene:
        super().fit(table, gold=gold)
        return self

    def _m_step(self, p: _Prepared, t: F64, state: Any) -> F64:
        correct = t.reshape(-1)[p.item_label]  # (n,) posterior that the answer is right
        if not p.unit_weights:
            correct = correct * p.w
        hits = _bincount(p.annotator, weights=correct, minlength=p.n_annotators)
        num = hits + self.smoothing * self.prior_diagonal
        den = p.answer_weight + self.smoothing
        acc: F64 = np.divide(num, den, out=np.full(p.n_annotators, self.prior_diagonal), where=den > 0)
        return acc

    def _e_step(self, p: _Prepared, state: Any) -> tuple[F64, float]:
        acc: F64 = state
        k = p.k
        log_right = np.log(np.maximum(acc, _TINY))  # (n_annotators,)
        log_wrong = np.log(np.maximum((1.0 - acc) / max(k - 1, 1), _TINY))  # (n_annotators,)
        # Every class gets the "wrong" term; the answered class gets (right - wrong) on top.
        base_w = log_wrong[p.annotator] if k > 1 else np.zeros(p.item.size)  # (n,)
        bonus_w = (log_right - log_wrong)[p.annotator] if k > 1 else log_right[p.annotator]  # (n,)
        if not p.unit_weights:
            base_w, bonus_w = base_w * p.w, bonus_w * p.w
        base = _bincount(p.item, weights=base_w, minlength=p.n_items)  # (n_items,)
        bonus = _bincount(p.item_label, weights=bonus_w, minlength=p.n_items * k).reshape(p.n_items, k)
        log_lik = bonus + base[:, None]
        s, d = self.smoothing, self.prior_diagonal
        log_param_prior = float((s * d * log_right + s * (1 - d) * np.log(np.maximum(1.0 - acc, _TINY))).sum())
        return log_lik, log_param_prior

    def _confusion(self, p: _Prepared, state: Any) -> F64:
        acc: F64 = state
        k = p.k
        if k == 1:
            return np.ones((p.n_annotators, 1, 1))
        off = (1.0 - acc) / (k - 1)
        conf = np.repeat(off[:, None, None], k, axis=1).repeat(k, axis=2)  # (n_annotators, k, k)
        idx = np.arange(k)
        conf[:, idx, idx] = acc[:, None]
        return conf


@dataclass(eq=False)
class _MaceState:
    theta: F64  # (n_annotators,) P(annotator knows the answer)
    xi: F64  # (n_annotators, k) label distribution when guessing
    log_right: F64  # (n_annotators, k) log P(answer l | true l)
    log_wrong: F64  # (n_annotators, k) log P(answer l | true j != l)


@dataclass(eq=False)
class MACE(_EMAggregator):
    """MACE, Multi-Annotator Competence Estimation (Hovy et al. 2013), trained by MAP-EM.

    Model: annotator a either knows the answer (probability theta[a]) and gives the true class, or
    guesses from its own strategy xi[a] (a distribution over labels), whatever the true class:

        pi[a, j, l] = theta[a] * [l == j] + (1 - theta[a]) * xi[a, l]

    With 1 + (k - 1) parameters per annotator it sits between one-coin and full Dawid–Skene. It
    was designed to find spammers: an annotator who always answers "A", a random clicker or an
    adversary all end with theta ~ 0 and their answers stop counting. The flip side: it never
    exploits a systematically wrong annotator the way Dawid–Skene can (by inverting his answers).

    M-step, with the expected "knew it" share of each answer r of a with label l on item i
    kn_r = T[i, l] * theta[a] / pi[a, l, l]:

        theta[a] = (sum w * kn_r + smoothing * prior_competence) / (sum w + smoothing)
        xi[a, l] ∝ sum_{r: label l} w * (1 - kn_r) + smoothing / k

    Deviations from the reference implementation, both for determinism and consistency with the
    other aggregators: initialised from majority vote instead of random restarts, class priors
    learned instead of uniform, MAP-EM with Beta/Dirichlet pseudo-counts instead of variational
    Bayes. Fitted extras: competence_ (n_annotators,) = theta, strategy_ (n_annotators, k) = xi.

    Reference: D. Hovy, T. Berg-Kirkpatrick, A. Vaswani, E. Hovy, "Learning Whom to Trust with
    MACE", NAACL-HLT 2013, pp. 1120–1130. https://aclanthology.org/N13-1132
    """

    prior_competence: float = 0.7
    competence_: F64 = field(init=False, repr=False)
    strategy_: F64 = field(init=False, repr=False)

    def _validate(self) -> None:
        super()._validate()
        _check_fraction("prior_competence", self.prior_competence)

    def fit(self, table: AnswerTable, *, gold: Mapping[int, int] | None = None) -> MACE:
        super().fit(table, gold=gold)
        return self

    def _m_step(self, p: _Prepared, t: F64, state: Any) -> _MaceState:
        k = p.k
        q = t.reshape(-1)[p.item_label]  # (n,) posterior that the answer's label is the true class
        if state is None:
            knew = q  # first pass: credit every answer that matches the consensus
        else:
            st: _MaceState = state
            share = st.theta[:, None] / np.maximum(np.exp(st.log_right), _TINY)  # (n_annotators, k)
            knew = q * np.minimum(share.reshape(-1)[p.annotator_label], 1.0)
        guessed = 1.0 - knew
        if not p.unit_weights:
            knew, guessed = knew * p.w, guessed * p.w
        s = self.smoothing
        theta_num = _bincount(p.annotator, weights=knew, minlength=p.n_annotators) + s * self.prior_competence
        theta_den = p.answer_weight + s
        theta = np.divide(theta_num, theta_den, out=np.full(p.n_annotators, self.prior_competence), where=theta_den > 0)
        xi_num = _bincount(p.annotator_label, weights=guessed, minlength=p.n_annotators * k).reshape(-1, k) + s / k
        xi_den = xi_num.sum(axis=1, keepdims=True)
        xi = np.divide(xi_num, xi_den, out=np.full_like(xi_num, 1.0 / k), where=xi_den > 0)
        guess = (1.0 - theta)[:, None] * xi  # (n_annotators, k)
        return _MaceState(
            theta=theta,
            xi=xi,
            log_right=np.log(np.maximum(theta[:, None] + guess, _TINY)),
            log_wrong=np.log(np.maximum(guess, _TINY)),
        )

    def _e_step(self, p: _Prepared, state: Any) -> tuple[F64, float]:
        st: _MaceState = state
        k = p.k
        wrong = st.log_wrong.reshape(-1)[p.annotator_label]  # (n,)
        bonus_w = st.log_right.reshape(-1)[p.annotator_label] - wrong  # (n,)
        if not p.unit_weights:
            wrong, bonus_w = wrong * p.w, bonus_w * p.w
        base = _bincount(p.item, weights=wrong, minlength=p.n_items)  # (n_items,)
        bonus = _bincount(p.item_label, weights=bonus_w, minlength=p.n_items * k).reshape(p.n_items, k)
        s, c = self.smoothing, self.prior_competence
        log_param_prior = float(
            (s * c * np.log(np.maximum(st.theta, _TINY))).sum()
            + (s * (1 - c) * np.log(np.maximum(1.0 - st.theta, _TINY))).sum()
            + (s / k * np.log(np.maximum(st.xi, _TINY))).sum()
        )
        return bonus + base[:, None], log_param_prior

    def _confusion(self, p: _Prepared, state: Any) -> F64:
        st: _MaceState = state
        k = p.k
        conf = ((1.0 - st.theta)[:, None, None] * st.xi[:, None, :]).repeat(k, axis=1)  # (n_annotators, k, k)
        idx = np.arange(k)
        conf[:, idx, idx] += st.theta[:, None]
        return conf

    def _after_fit(self, p: _Prepared, state: Any) -> None:
        st: _MaceState = state
        self.competence_ = st.theta
        self.strategy_ = st.xi
