"""Reads for the manager dashboard: spend, progress, throughput, learning curve, quality, jobs.

Every figure over annotations, reviews or items is aggregated by PostgreSQL (``Sum``/``Count``
with ``Case``/``When``, ``TruncDate``); Python only merges a handful of grouped rows (one per
annotator, per day, per item status). The learning-curve fit is plain NumPy/SciPy on one
point per model version (section "learning curve maths" below; it imports no Django and could
move to ``mltasks/core``).

Cost rules (docs/dashboard.md, "Formulas"):

* an annotation costs ``price_per_label`` of the annotator's membership when set, otherwise
  ``hourly_rate x duration_ms / 3 600 000``. ``duration_ms`` is the *active* time the
  workspace measured: its clock stops while the tab is hidden and after an idle gap, so idle
  time is never paid for here;
* a review costs the reviewer's ``price_per_label`` when set, otherwise
  ``hourly_rate x REVIEW_ASSUMED_SECONDS / 3600`` (Review has no duration of its own);
* retracted annotations (``retracted_at`` set) cost nothing and count nowhere;
* an annotation or review by a user with no membership in the project (removed since) costs 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    FilteredRelation,
    IntegerField,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, TruncDate
from django.utils import timezone
from numpy.typing import NDArray

from labeling.models import (
    Annotation,
    ConsensusLabel,
    ImportJob,
    Item,
    LabelClass,
    MLJob,
    ModelVersion,
    Project,
    Review,
)

MONEY = DecimalField(max_digits=20, decimal_places=6)
ZERO = Decimal(0)
MS_PER_HOUR = Decimal(3_600_000)
RECENT_WINDOW = timedelta(hours=24)
DONE_STATUSES = (Item.Status.DONE, Item.Status.REVIEWED)
# An annotator's accuracy vs gold counts towards "human-level error" only over this many
# gold answers: with fewer, the best annotator is mostly the luckiest one.
MIN_GOLD_FOR_HUMAN_LEVEL = 10
# Central 80 % band of the learning-curve projection (10th to 90th percentile).
BAND_PERCENTILES = (10.0, 90.0)
BAND_SAMPLES = 2000


def review_assumed_seconds() -> int:
    return int(getattr(settings, "REVIEW_ASSUMED_SECONDS", 60))


def default_target_accuracy() -> float:
    return float(getattr(settings, "DASHBOARD_DEFAULT_TARGET_ACCURACY", 0.9))


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendRow:
    """Spend of one person (``key`` = user id) or one day (``key`` = ISO date)."""

    key: str
    label: str
    annotations: int
    active_hours: float
    annotation_cost: Decimal
    reviews: int
    review_cost: Decimal

    @property
    def total(self) -> Decimal:
        return self.annotation_cost + self.review_cost


@dataclass(frozen=True)
class CostSummary:
    total: Decimal
    annotation_cost: Decimal
    review_cost: Decimal
    annotations: int
    reviews: int
    active_hours: float
    consensus_labels: int
    cost_per_annotation: Decimal | None  # annotation spend / live annotations
    cost_per_consensus_label: Decimal | None  # total spend (overlap and reviews included) / consensus labels
    review_assumed_seconds: int
    by_person: list[SpendRow]
    by_day: list[SpendRow]


@dataclass(frozen=True)
class Progress:
    items_total: int
    by_status: dict[str, int]
    by_split: dict[str, dict[str, int]]  # split -> status -> items
    items_done: int
    consensus_done: int
    consensus_target: int
    remaining_annotations: int  # sum over not-done items of max(wanted - annotation_count, 0)


@dataclass(frozen=True)
class AnnotatorThroughput:
    user_id: int
    username: str
    annotations: int
    annotations_recent: int
    active_hours: float
    active_hours_recent: float
    per_active_hour: float | None
    per_active_hour_recent: float | None
    per_wall_hour: float | None
    per_wall_hour_recent: float


@dataclass(frozen=True)
class Throughput:
    now: datetime
    window_hours_recent: float
    window_hours_all: float  # from the project's first live annotation to now
    overall: AnnotatorThroughput
    annotators: list[AnnotatorThroughput]
    eta_hours: float | None  # remaining annotations / recent wall-clock rate
    eta_at: datetime | None
    eta_reason: str  # why eta_hours is None, "" otherwise
    labor_hours_to_finish: float | None  # remaining / all-time active rate: paid hours still needed
    cost_to_finish: Decimal | None  # remaining x cost per annotation


@dataclass(frozen=True)
class CurvePoint:
    model_version: int
    n_train: int
    cost: float
    accuracy: float
    is_active: bool


@dataclass(frozen=True)
class Projection:
    """A fitted err(x) = a x^-b + c, and the x at which it reaches the target accuracy."""

    axis: str  # "labels" | "money"
    available: bool
    reason: str  # why not available / not reachable, "" otherwise
    a: float | None = None
    b: float | None = None
    c: float | None = None
    asymptote_accuracy: float | None = None  # 1 - c
    current_x: float | None = None
    reachable: bool | None = None
    needed_x: float | None = None  # total x at the target
    still_needed_x: float | None = None  # needed_x - current_x, never below 0
    band_low: float | None = None  # still needed, 10th percentile
    band_high: float | None = None  # still needed, 90th percentile; None = unbounded (some draws never reach)
    band_method: str = ""
    curve: list[dict[str, float]] = field(default_factory=list)  # x, accuracy, low, high


@dataclass(frozen=True)
class LearningCurve:
    target_accuracy: float
    points: list[CurvePoint]
    labels: Projection
    money: Projection


@dataclass(frozen=True)
class ConfusionMatrix:
    available: bool
    reason: str
    model_version: int | None
    accuracy: float | None
    n_eval: int | None
    class_names: list[str]
    matrix: list[list[int]]  # rows = true class, columns = predicted class


@dataclass(frozen=True)
class AnnotatorQuality:
    user_id: int
    username: str
    vs_gold_n: int
    vs_gold_accuracy: float | None
    vs_consensus_n: int
    vs_consensus_accuracy: float | None


@dataclass(frozen=True)
class QualitySummary:
    agreement_available: bool
    agreement_reason: str
    agreement: dict[str, Any] | None  # project-level statistics with bootstrap CIs (consensus job)
    annotators: list[AnnotatorQuality]
    gold_items: int
    consensus_items: int
    human_level_error: float | None
    human_level_reason: str
    human_level_min_gold: int  # gold answers an annotator needs to count for human-level error
    human_level_basis: str  # "gold" or "dawid_skene" (estimated from the annotators' agreement)
    panel_error: float | None
    panel_n: int  # gold items with a (non-gold) consensus label
    panel_reason: str
    panel_basis: str  # "gold" or "dawid_skene"
    model_error: float | None
    model_reason: str


@dataclass(frozen=True)
class JobRow:
    kind: str  # "import" | MLJob.Kind
    id: int
    status: str
    progress: float  # 0..1
    message: str
    created_at: datetime
    heartbeat_at: datetime | None


@dataclass(frozen=True)
class Dashboard:
    project_id: int
    project_name: str
    generated_at: datetime
    cost: CostSummary
    progress: Progress
    throughput: Throughput
    learning_curve: LearningCurve
    confusion: ConfusionMatrix
    quality: QualitySummary
    jobs: list[JobRow]


# --- cost -------------------------------------------------------------------------------


def _live_annotations(project_id: int) -> QuerySet[Annotation]:
    """Live annotations of the project, each joined (LEFT JOIN) to its annotator's membership as ``m``."""
    return Annotation.objects.filter(item__project_id=project_id, retracted_at__isnull=True).annotate(
        m=FilteredRelation("annotator__memberships", condition=Q(annotator__memberships__project_id=project_id))
    )


def _reviews(project_id: int) -> QuerySet[Review]:
    return Review.objects.filter(item__project_id=project_id).annotate(
        m=FilteredRelation("reviewer__memberships", condition=Q(reviewer__memberships__project_id=project_id))
    )


def _priced(hourly: ExpressionWrapper) -> Coalesce:
    """The membership's price per label when set, else ``hourly``; 0 without a membership row."""
    return Coalesce(
        Case(
            When(m__price_per_label__isnull=False, then=F("m__price_per_label")),
            default=hourly,
            output_field=MONEY,
        ),
        Value(ZERO),
        output_field=MONEY,
    )


def annotation_cost_expression() -> Coalesce:
    """Cost of one annotation row of ``_live_annotations``, in SQL."""
    return _priced(ExpressionWrapper(F("m__hourly_rate") * F("duration_ms") / Value(MS_PER_HOUR), output_field=MONEY))


def review_cost_expression() -> Coalesce:
    """Cost of one review row of ``_reviews``: price per label, else the hourly rate x the assumed time."""
    hours = Decimal(review_assumed_seconds()) / Decimal(3600)
    return _priced(ExpressionWrapper(F("m__hourly_rate") * Value(hours, output_field=MONEY), output_field=MONEY))


def _money(value: Decimal | None) -> Decimal:
    return (value or ZERO).quantize(Decimal("0.0001"))


def _usernames(user_ids: set[int]) -> dict[int, str]:
    User = get_user_model()
    return {u.pk: u.get_username() for u in User.objects.filter(pk__in=user_ids)}


def annotation_stats(*, project_id: int, now: datetime) -> list[dict[str, Any]]:
    """Live annotations grouped by (annotator, UTC day): every annotation figure of the dashboard.

    ONE statement: cost, spend per day, throughput and accuracy vs gold / consensus all read
    the project's annotations, and reading them once (FILTERed aggregates) instead of four
    times is what matters on a large project (docs/dashboard.md, "Query cost"). The result
    has at most annotators x days rows; ``_rollup`` folds it per annotator or per day.
    Keys: annotator_id, day, n, ms, cost, first, n_recent, ms_recent, gold_n, gold_ok, cons_n, cons_ok.
    """
    recent = Q(submitted_at__gt=now - RECENT_WINDOW, submitted_at__lte=now)
    has_gold = Q(item__gold_label_id__isnull=False)
    has_consensus = Q(item__consensus__isnull=False)
    return list(
        _live_annotations(project_id)
        .annotate(day=TruncDate("submitted_at"))
        .values("annotator_id", "day")
        .annotate(
            n=Count("id"),
            ms=Coalesce(Sum("duration_ms"), 0),
            cost=Coalesce(Sum(annotation_cost_expression(), output_field=MONEY), Value(ZERO), output_field=MONEY),
            first=Min("submitted_at"),
            n_recent=Count("id", filter=recent),
            ms_recent=Coalesce(Sum("duration_ms", filter=recent), 0),
            gold_n=Count("id", filter=has_gold),
            gold_ok=Count("id", filter=has_gold & Q(label_id=F("item__gold_label_id"))),
            cons_n=Count("id", filter=has_consensus),
            cons_ok=Count("id", filter=has_consensus & Q(label_id=F("item__consensus__label_id"))),
        )
        .order_by()
    )


def review_stats(*, project_id: int) -> list[dict[str, Any]]:
    """Reviews grouped by (reviewer, UTC day) with their cost, in one statement."""
    return list(
        _reviews(project_id)
        .annotate(day=TruncDate("created_at"))
        .values("reviewer_id", "day")
        .annotate(
            n=Count("id"),
            cost=Coalesce(Sum(review_cost_expression(), output_field=MONEY), Value(ZERO), output_field=MONEY),
        )
        .order_by()
    )


_SUMMED = ("n", "ms", "cost", "n_recent", "ms_recent", "gold_n", "gold_ok", "cons_n", "cons_ok")


def _rollup(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """Fold grouped rows on ``key`` (annotator_id or day): sums, and the earliest ``first``."""
    out: dict[Any, dict[str, Any]] = {}
    for r in rows:
        acc = out.get(r[key])
        if acc is None:
            out[r[key]] = {k: r[k] for k in (key, "first", *_SUMMED) if k in r}
            continue
        for k in _SUMMED:
            if k in r:
                acc[k] += r[k]
        if r.get("first") is not None and (acc.get("first") is None or r["first"] < acc["first"]):
            acc["first"] = r["first"]
    return out


def project_cost_summary(
    *,
    project_id: int,
    stats: list[dict[str, Any]] | None = None,
    reviews: list[dict[str, Any]] | None = None,
    consensus_labels: int | None = None,
) -> CostSummary:
    """Spend per person and per day, cost per annotation and per consensus label.

    ``stats`` (``annotation_stats``), ``reviews`` (``review_stats``) and ``consensus_labels``
    may be passed in when the caller has them already; otherwise this reads them.
    """
    rows = stats if stats is not None else annotation_stats(project_id=project_id, now=timezone.now())
    review_rows = reviews if reviews is not None else review_stats(project_id=project_id)
    per_reviewer = list(_rollup(review_rows, "reviewer_id").values())
    if consensus_labels is None:
        consensus_labels = ConsensusLabel.objects.filter(item__project_id=project_id).count()

    ann_by_user = _rollup(rows, "annotator_id")
    rev_by_user = {r["reviewer_id"]: r for r in per_reviewer}
    names = _usernames(set(ann_by_user) | set(rev_by_user))
    by_person = sorted(
        (
            _spend_row(str(uid), names.get(uid, f"user {uid}"), ann_by_user.get(uid), rev_by_user.get(uid))
            for uid in ann_by_user.keys() | rev_by_user.keys()
        ),
        key=lambda row: (-row.total, row.label),
    )
    ann_by_day = _rollup(rows, "day")
    rev_by_day = _rollup(review_rows, "day")
    by_day = [
        _spend_row(day.isoformat(), day.isoformat(), ann_by_day.get(day), rev_by_day.get(day))
        for day in _day_range(ann_by_day.keys() | rev_by_day.keys())
    ]

    annotation_cost = _money(sum((r["cost"] or ZERO for r in rows), ZERO))
    review_cost = _money(sum((r["cost"] or ZERO for r in per_reviewer), ZERO))
    n_annotations = sum(r["n"] for r in rows)
    total = annotation_cost + review_cost
    return CostSummary(
        total=total,
        annotation_cost=annotation_cost,
        review_cost=review_cost,
        annotations=n_annotations,
        reviews=sum(r["n"] for r in per_reviewer),
        active_hours=sum(r["ms"] for r in rows) / 3_600_000,
        consensus_labels=consensus_labels,
        cost_per_annotation=_money(annotation_cost / n_annotations) if n_annotations else None,
        cost_per_consensus_label=_money(total / consensus_labels) if consensus_labels else None,
        review_assumed_seconds=review_assumed_seconds(),
        by_person=by_person,
        by_day=by_day,
    )


def _spend_row(key: str, label: str, ann: dict[str, Any] | None, rev: dict[str, Any] | None) -> SpendRow:
    return SpendRow(
        key=key,
        label=label,
        annotations=ann["n"] if ann else 0,
        active_hours=(ann["ms"] / 3_600_000) if ann else 0.0,
        annotation_cost=_money(ann["cost"] if ann else ZERO),
        reviews=rev["n"] if rev else 0,
        review_cost=_money(rev["cost"] if rev else ZERO),
    )


def _day_range(days: set[date]) -> list[date]:
    """Every day from the first to the last one with spend, so a chart shows idle days as zero."""
    if not days:
        return []
    first, last = min(days), max(days)
    n = min((last - first).days, 3650)  # a chart of more than ten years of days is not useful
    return [last - timedelta(days=n - i) for i in range(n + 1)]


# --- progress and throughput --------------------------------------------------------------


def item_stats(*, project_id: int) -> list[dict[str, Any]]:
    """The project's items grouped by (split, status), in ONE statement over the items.

    Besides the counts it carries what else needs a pass over every item: annotations still
    wanted, consensus labels (LEFT JOIN), gold items, and the panel's agreement with gold.
    Keys: split, status, n, remaining, n_consensus, gold, panel_n, panel_ok.
    """
    remaining = Greatest(F("wanted") - F("annotation_count"), Value(0), output_field=IntegerField())
    has_consensus = Q(consensus__isnull=False)
    panel = Q(gold_label_id__isnull=False) & has_consensus & ~Q(consensus__method=ConsensusLabel.Method.GOLD)
    return list(
        Item.objects.filter(project_id=project_id)
        .values("split", "status")
        .annotate(
            n=Count("id"),
            remaining=Coalesce(Sum(remaining, filter=~Q(status__in=DONE_STATUSES)), 0),
            n_consensus=Count("id", filter=has_consensus),
            gold=Count("id", filter=Q(gold_label_id__isnull=False)),
            panel_n=Count("id", filter=panel),
            panel_ok=Count("id", filter=panel & Q(consensus__label_id=F("gold_label_id"))),
        )
        .order_by()
    )


def project_progress(*, project_id: int, stats: list[dict[str, Any]] | None = None) -> Progress:
    """Items by status and split, consensus done vs target, annotations still wanted."""
    rows = stats if stats is not None else item_stats(project_id=project_id)
    by_status: dict[str, int] = dict.fromkeys(Item.Status.values, 0)
    by_split: dict[str, dict[str, int]] = {sp: dict.fromkeys(Item.Status.values, 0) for sp in Item.Split.values}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["n"]
        by_split.setdefault(r["split"], {})[r["status"]] = r["n"]
    total = sum(r["n"] for r in rows)
    return Progress(
        items_total=total,
        by_status=by_status,
        by_split=by_split,
        items_done=sum(by_status.get(str(s), 0) for s in DONE_STATUSES),
        consensus_done=sum(r["n_consensus"] for r in rows),
        consensus_target=total,
        remaining_annotations=sum(r["remaining"] for r in rows),
    )


def _rate(n: int, hours: float) -> float | None:
    return n / hours if hours > 0 else None


def project_throughput(
    *,
    project_id: int,
    remaining_annotations: int,
    cost_per_annotation: Decimal | None,
    now: datetime | None = None,
    stats: list[dict[str, Any]] | None = None,
) -> Throughput:
    """Labels per active hour and per wall-clock hour, all time and over the last 24 h, and the ETA.

    * per active hour = live annotations / their summed ``duration_ms`` (how fast people label
      while they work);
    * per wall-clock hour = live annotations submitted in the window / the window's length
      (24 h for "recent"; from the project's first live annotation to ``now`` for "all time"):
      the delivery pace, breaks and nights included;
    * ETA = remaining annotations / the recent (24 h) wall-clock rate of the whole team.
    """
    now = now or timezone.now()
    rows = list(
        _rollup(
            stats if stats is not None else annotation_stats(project_id=project_id, now=now), "annotator_id"
        ).values()
    )
    names = _usernames({r["annotator_id"] for r in rows})
    first = min((r["first"] for r in rows), default=None)
    window_all = max((now - first).total_seconds() / 3600, 0.0) if first else 0.0
    window_recent = RECENT_WINDOW.total_seconds() / 3600

    def make(uid: int, username: str, n: int, n_recent: int, ms: int, ms_recent: int) -> AnnotatorThroughput:
        return AnnotatorThroughput(
            user_id=uid,
            username=username,
            annotations=n,
            annotations_recent=n_recent,
            active_hours=ms / 3_600_000,
            active_hours_recent=ms_recent / 3_600_000,
            per_active_hour=_rate(n, ms / 3_600_000),
            per_active_hour_recent=_rate(n_recent, ms_recent / 3_600_000),
            per_wall_hour=_rate(n, window_all),
            per_wall_hour_recent=n_recent / window_recent,
        )

    annotators = sorted(
        (
            make(r["annotator_id"], names.get(r["annotator_id"], "?"), r["n"], r["n_recent"], r["ms"], r["ms_recent"])
            for r in rows
        ),
        key=lambda a: (-a.annotations, a.username),
    )
    overall = make(
        0,
        "all annotators",
        sum(r["n"] for r in rows),
        sum(r["n_recent"] for r in rows),
        sum(r["ms"] for r in rows),
        sum(r["ms_recent"] for r in rows),
    )
    eta_hours: float | None = None
    eta_reason = ""
    if remaining_annotations == 0:
        eta_hours, eta_reason = 0.0, ""
    elif overall.per_wall_hour_recent > 0:
        eta_hours = remaining_annotations / overall.per_wall_hour_recent
    else:
        eta_reason = "no annotations in the last 24 hours: no current pace to project"
    return Throughput(
        now=now,
        window_hours_recent=window_recent,
        window_hours_all=window_all,
        overall=overall,
        annotators=annotators,
        eta_hours=eta_hours,
        eta_at=now + timedelta(hours=eta_hours) if eta_hours is not None and eta_hours < 1e6 else None,
        eta_reason=eta_reason,
        labor_hours_to_finish=(remaining_annotations / overall.per_active_hour if overall.per_active_hour else None),
        cost_to_finish=_money(cost_per_annotation * remaining_annotations) if cost_per_annotation is not None else None,
    )


# --- learning curve maths (pure NumPy/SciPy; no Django) -----------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """err(x) = a * x**(-b) + c, fitted on (x, err) points; ``cov`` is None when it is undefined."""

    a: float
    b: float
    c: float
    cov: NDArray[np.float64] | None  # (3, 3) over (a, b, c), or None

    def error(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.a * np.power(x, -self.b) + self.c

    def x_at_error(self, err: float) -> float:
        """Smallest x with err(x) <= err; ``inf`` when err is at or below the asymptote c."""
        return power_law_x_at_error(self.a, self.b, self.c, err)


def power_law_x_at_error(a: float, b: float, c: float, err: float) -> float:
    if err <= c or a <= 0 or b <= 0:
        return math.inf
    return float((a / (err - c)) ** (1.0 / b))


def power_law_fit(x: NDArray[np.float64], err: NDArray[np.float64]) -> PowerLawFit:
    """Least-squares fit of err = a x^-b + c with a > 0, 0 < b <= 3, 0 <= c < 1 (scipy curve_fit).

    x: (n,) positive, err: (n,) in [0, 1]; needs n >= 3. x is scaled by its maximum for a
    well-conditioned fit and the result scaled back: a = a' * s^b. The covariance comes from
    the residual variance and needs n > 3 (with 3 points the curve passes through them all and
    says nothing about its own uncertainty).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(x, dtype=np.float64)  # (n,)
    err = np.asarray(err, dtype=np.float64)  # (n,)
    if x.shape != err.shape or x.ndim != 1:
        raise ValueError("x and err must be 1-d arrays of one length")
    if x.size < 3:
        raise ValueError("a power-law fit needs at least 3 points")
    if np.any(x <= 0):
        raise ValueError("x must be positive")
    scale = float(x.max())
    xs = x / scale

    def model(v: NDArray[np.float64], a: float, b: float, c: float) -> NDArray[np.float64]:
        return a * np.power(v, -b) + c

    c0 = max(0.0, float(err.min()) * 0.5)
    a0 = max(float(err.max()) - c0, 1e-3) * float(xs.min()) ** 0.5
    best: tuple[float, NDArray[np.float64], NDArray[np.float64]] | None = None
    # A few starting exponents: the least-squares surface of a power law has flat valleys.
    for b0 in (0.3, 0.6, 1.0):
        try:
            with warnings.catch_warnings():
                # With exactly 3 points the covariance is undefined; handled below, not an error.
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(
                    model, xs, err, p0=(a0, b0, c0), bounds=([1e-12, 1e-6, 0.0], [np.inf, 3.0, 0.999]), maxfev=20000
                )
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((model(xs, *popt) - err) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        raise ValueError("the learning-curve fit did not converge")
    _, (a_s, b, c), pcov = best
    a = float(a_s) * scale ** float(b)
    cov: NDArray[np.float64] | None = None
    if x.size > 3 and np.all(np.isfinite(pcov)):
        # Jacobian of (a, b, c) w.r.t. (a', b, c): a = a' s^b.
        jac = np.array([[scale**b, a * math.log(scale), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        cov = jac @ pcov @ jac.T  # (3, 3)
    return PowerLawFit(a=a, b=float(b), c=float(c), cov=cov)


def power_law_samples(fit: PowerLawFit, rng: np.random.Generator, n: int = BAND_SAMPLES) -> NDArray[np.float64]:
    """(n, 3) parameter draws from N(fit, cov), kept inside the fit's bounds (a, b > 0; 0 <= c < 1)."""
    if fit.cov is None:
        raise ValueError("no covariance: the band needs more than 3 points")
    draws = rng.multivariate_normal([fit.a, fit.b, fit.c], fit.cov, size=n, check_valid="ignore")  # (n, 3)
    keep = (draws[:, 0] > 0) & (draws[:, 1] > 0) & (draws[:, 2] >= 0) & (draws[:, 2] < 1)
    return draws[keep]


def project_learning_curve_projection(
    *, axis: str, x: NDArray[np.float64], accuracy: NDArray[np.float64], target_accuracy: float, seed: int = 0
) -> Projection:
    """Fit the learning curve on (x, accuracy) and project the x still needed for ``target_accuracy``.

    The band is the 10th-90th percentile of the x still needed over 2000 draws of (a, b, c)
    from the fit's parameter covariance (a Gaussian approximation of the least-squares
    uncertainty, which ignores the noise of each accuracy measurement beyond what the
    scatter of the points shows). Draws that never reach the target make the band open-ended.
    """
    ok = np.isfinite(x) & np.isfinite(accuracy) & (x > 0)
    x, accuracy = x[ok], accuracy[ok]
    if x.size < 3:
        return Projection(
            axis=axis,
            available=False,
            reason="not enough model versions yet (need 3 with a non-zero "
            + ("label count" if axis == "labels" else "recorded cost")
            + ")",
        )
    err = 1.0 - accuracy
    try:
        fit = power_law_fit(x, err)
    except ValueError as exc:
        return Projection(axis=axis, available=False, reason=str(exc))
    current = float(x.max())
    target_err = 1.0 - target_accuracy
    needed = fit.x_at_error(target_err)
    reachable = math.isfinite(needed)
    reason = "" if reachable else "not reachable with this model at the current trend"
    still = max(needed - current, 0.0) if reachable else None

    band_low = band_high = None
    band_method = "none: the band needs at least 4 model versions"
    samples: NDArray[np.float64] | None = None
    if fit.cov is not None:
        samples = power_law_samples(fit, np.random.default_rng(seed))
        if samples.shape[0] >= 100:
            a_s, b_s, c_s = samples[:, 0], samples[:, 1], samples[:, 2]  # (s,) each
            gap = target_err - c_s  # (s,)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                need = np.where(gap > 0, np.power(a_s / np.where(gap > 0, gap, 1.0), 1.0 / b_s), np.inf)  # (s,)
            still_s = np.maximum(need - current, 0.0)
            # "lower"/"higher" pick sample values: no interpolation between inf and a number.
            lo = np.percentile(still_s, BAND_PERCENTILES[0], method="lower")
            hi = np.percentile(still_s, BAND_PERCENTILES[1], method="higher")
            band_low = float(lo) if math.isfinite(lo) else None
            band_high = float(hi) if math.isfinite(hi) else None
            band_method = "10th-90th percentile over draws from the fit's parameter covariance"
        else:
            samples = None

    # The drawn curve: from the first point to past the projection (at most 20x the data).
    x_end = current * 1.5
    if reachable:
        x_end = max(x_end, min(needed * 1.2, current * 20))
    grid = np.geomspace(float(x.min()), x_end, 60)  # (60,)
    acc_fit = 1.0 - fit.error(grid)
    if samples is not None:
        acc_draws = 1.0 - (samples[:, :1] * np.power(grid[None, :], -samples[:, 1:2]) + samples[:, 2:3])  # (s, 60)
        low, high = np.percentile(acc_draws, BAND_PERCENTILES, axis=0)  # (60,) each
    else:
        low = high = acc_fit
    curve = [
        {"x": float(g), "accuracy": float(f), "low": float(lo), "high": float(hi)}
        for g, f, lo, hi in zip(grid, acc_fit, low, high, strict=True)
    ]
    return Projection(
        axis=axis,
        available=True,
        reason=reason,
        a=fit.a,
        b=fit.b,
        c=fit.c,
        asymptote_accuracy=1.0 - fit.c,
        current_x=current,
        reachable=reachable,
        needed_x=needed if reachable else None,
        still_needed_x=still,
        band_low=band_low,
        band_high=band_high,
        band_method=band_method,
        curve=curve,
    )


# --- model quality ------------------------------------------------------------------------


def _accuracy(metrics: Any) -> float | None:
    value = metrics.get("accuracy") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def project_learning_curve(*, project: Project, target_accuracy: float) -> LearningCurve:
    versions = list(
        ModelVersion.objects.filter(project_id=project.pk)
        .only("id", "number", "n_train", "cost_at_training", "metrics")
        .order_by("number")
    )
    points = [
        CurvePoint(
            model_version=v.number,
            n_train=v.n_train,
            cost=float(v.cost_at_training),
            accuracy=acc,
            is_active=v.pk == project.active_model_id,
        )
        for v in versions
        if (acc := _accuracy(v.metrics)) is not None
    ]
    accuracy = np.array([p.accuracy for p in points], dtype=np.float64)
    return LearningCurve(
        target_accuracy=target_accuracy,
        points=points,
        labels=project_learning_curve_projection(
            axis="labels",
            x=np.array([p.n_train for p in points], dtype=np.float64),
            accuracy=accuracy,
            target_accuracy=target_accuracy,
        ),
        money=project_learning_curve_projection(
            axis="money",
            x=np.array([p.cost for p in points], dtype=np.float64),
            accuracy=accuracy,
            target_accuracy=target_accuracy,
        ),
    )


def project_confusion(*, project: Project) -> ConfusionMatrix:
    """The active model's evaluation-set confusion matrix, with class names."""
    if project.active_model_id is None:
        return ConfusionMatrix(False, "no active model yet", None, None, None, [], [])
    mv = ModelVersion.objects.filter(pk=project.active_model_id).only("number", "class_ids", "metrics").first()
    if mv is None:
        return ConfusionMatrix(False, "no active model yet", None, None, None, [], [])
    metrics = mv.metrics if isinstance(mv.metrics, dict) else {}
    matrix = metrics.get("confusion")
    class_ids = list(mv.class_ids or [])
    names_by_id = dict(LabelClass.objects.filter(project_id=project.pk).values_list("id", "name"))
    names = [names_by_id.get(cid, f"class {cid}") for cid in class_ids]
    n = metrics.get("n")
    if not isinstance(matrix, list) or not matrix or len(matrix) != len(names):
        return ConfusionMatrix(
            False, "the active model has no confusion matrix", mv.number, _accuracy(metrics), n, names, []
        )
    return ConfusionMatrix(
        True,
        "",
        mv.number,
        _accuracy(metrics),
        n if isinstance(n, int) else None,
        names,
        [[int(v) for v in row] for row in matrix],
    )


# --- annotation quality -------------------------------------------------------------------


def project_quality(
    *,
    project: Project,
    model_accuracy: float | None,
    stats: list[dict[str, Any]] | None = None,
    items: list[dict[str, Any]] | None = None,
) -> QualitySummary:
    """Per-annotator accuracy vs gold and vs consensus; human-level, panel and model error.

    * human-level error: 1 - the best accuracy vs gold among annotators with at least
      MIN_GOLD_FOR_HUMAN_LEVEL gold answers;
    * panel error: 1 - the accuracy vs gold of the panel's consensus on gold items, made by the
      last full recompute with the gold answers held out (before any recompute: reviewed gold
      items only, since a gold item's live consensus is its gold answer);
    * model error: 1 - the active model's evaluation-set accuracy.
    Accuracy vs consensus includes the annotator's own vote in the consensus, so it flatters
    everyone a little, most with low overlap.
    """
    pid = project.pk
    rows = list(
        _rollup(
            stats if stats is not None else annotation_stats(project_id=pid, now=timezone.now()), "annotator_id"
        ).values()
    )
    items = items if items is not None else item_stats(project_id=pid)
    names = _usernames({r["annotator_id"] for r in rows})
    annotators = sorted(
        (
            AnnotatorQuality(
                user_id=r["annotator_id"],
                username=names.get(r["annotator_id"], "?"),
                vs_gold_n=r["gold_n"],
                vs_gold_accuracy=r["gold_ok"] / r["gold_n"] if r["gold_n"] else None,
                vs_consensus_n=r["cons_n"],
                vs_consensus_accuracy=r["cons_ok"] / r["cons_n"] if r["cons_n"] else None,
            )
            for r in rows
        ),
        key=lambda a: a.username,
    )
    gold_items = sum(r["gold"] for r in items)
    consensus_items = sum(r["n_consensus"] for r in items)

    eligible = [a.vs_gold_accuracy for a in annotators if a.vs_gold_n >= MIN_GOLD_FOR_HUMAN_LEVEL]
    # Without gold, the last Dawid–Skene run estimates each reader's accuracy and the panel's
    # error from how the readers agree (DESIGN: "the best annotator's estimated error").
    ds = _consensus_result(project_id=pid)
    estimated = (
        [a["accuracy"] for a in ds.get("annotators", []) if a.get("n", 0) >= MIN_ANSWERS_FOR_ESTIMATE]
        if ds.get("method") == "dawid_skene"
        else []
    )
    human_basis = panel_basis = "gold"
    if eligible:
        human, human_reason = 1.0 - max(a for a in eligible if a is not None), ""
    elif estimated:
        human, human_reason, human_basis = 1.0 - max(estimated), "", "dawid_skene"
    elif gold_items:
        human, human_reason = None, f"not yet available: no annotator has {MIN_GOLD_FOR_HUMAN_LEVEL} gold answers"
    else:
        human, human_reason = None, "not yet available: no gold items and no Dawid–Skene run with enough overlap"

    # Gold basis: the last full recompute's consensus made with the gold answers held out
    # (the live consensus of a gold item is the gold answer itself); else reviewed gold items.
    panel = dict(ds.get("panel_vs_gold") or {"n": 0, "ok": 0})
    if not panel["n"]:
        panel = {"n": sum(r["panel_n"] for r in items), "ok": sum(r["panel_ok"] for r in items)}
    if panel["n"]:
        panel_error, panel_reason = 1.0 - panel["ok"] / panel["n"], ""
    elif ds.get("method") == "dawid_skene" and ds.get("panel_error") is not None:
        panel_error, panel_reason, panel_basis = float(ds["panel_error"]), "", "dawid_skene"
        panel["n"] = int(ds.get("n_items", 0))
    else:
        panel_error, panel_reason = None, "not yet available: no consensus label on a gold item"

    agreement = (ds.get("agreement") or {}).get("project")
    return QualitySummary(
        agreement_available=agreement is not None,
        agreement_reason=""
        if agreement
        else "not yet available: no consensus recompute has run (it runs every "
        f"{getattr(settings, 'CONSENSUS_REFRESH_EVERY', 200)} annotations, or on request)",
        agreement=agreement,
        annotators=annotators,
        gold_items=gold_items,
        consensus_items=consensus_items,
        human_level_error=human,
        human_level_reason=human_reason,
        human_level_min_gold=MIN_GOLD_FOR_HUMAN_LEVEL,
        human_level_basis=human_basis,
        panel_error=panel_error,
        panel_n=panel["n"],
        panel_reason=panel_reason,
        panel_basis=panel_basis,
        model_error=1.0 - model_accuracy if model_accuracy is not None else None,
        model_reason="" if model_accuracy is not None else "not yet available: no active model with an accuracy",
    )


# A reader needs this many answers before a Dawid–Skene accuracy estimate counts as human level.
MIN_ANSWERS_FOR_ESTIMATE = 20


def _consensus_result(*, project_id: int) -> dict[str, Any]:
    """The summary the last successful consensus recompute stored on its job ({} if none)."""
    job = (
        MLJob.objects.filter(project_id=project_id, kind=MLJob.Kind.CONSENSUS, status=MLJob.Status.SUCCEEDED)
        .order_by("-finished_at")
        .only("result")
        .first()
    )
    return job.result if job else {}


# --- jobs ---------------------------------------------------------------------------------


def project_live_jobs(*, project_id: int) -> list[JobRow]:
    """Pending and running import and ML jobs, oldest first."""
    live = (ImportJob.Status.PENDING, ImportJob.Status.RUNNING)
    imports = [
        JobRow(
            kind="import",
            id=j.pk,
            status=j.status,
            progress=(j.processed / j.total) if j.total else 0.0,
            message=f"{j.source} {j.processed}/{j.total}".strip(),
            created_at=j.created_at,
            heartbeat_at=None,
        )
        for j in ImportJob.objects.filter(project_id=project_id, status__in=live).order_by("created_at")[:50]
    ]
    ml = [
        JobRow(
            kind=j.kind,
            id=j.pk,
            status=j.status,
            progress=min(max(j.progress, 0.0), 1.0),
            message=j.message,
            created_at=j.created_at,
            heartbeat_at=j.heartbeat_at,
        )
        for j in MLJob.objects.filter(project_id=project_id, status__in=live).order_by("created_at")[:50]
    ]
    return sorted(imports + ml, key=lambda j: j.created_at)


# --- everything -----------------------------------------------------------------------------


def dashboard_cache_seconds() -> int:
    return int(getattr(settings, "DASHBOARD_CACHE_SECONDS", 60))


Rows = list[dict[str, Any]]


def _heavy_stats(*, project_id: int, now: datetime) -> tuple[Rows, Rows, Rows]:
    """The statements that read every annotation, item and review of the project.

    On PostgreSQL they run with JIT off (its compile time, ~0.5 s, buys nothing for one
    aggregate pass) and 64 MB of work_mem, so that the hash joins and the sort for the
    grouping stay in memory; ``SET LOCAL`` ends with this transaction.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SET LOCAL jit = off")
                cur.execute("SET LOCAL work_mem = '64MB'")
        return (
            annotation_stats(project_id=project_id, now=now),
            item_stats(project_id=project_id),
            review_stats(project_id=project_id),
        )


def project_heavy_stats(
    *, project_id: int, now: datetime | None = None, max_age_seconds: int = 0
) -> tuple[datetime, Rows, Rows, Rows]:
    """(computed_at, annotation_stats, item_stats, review_stats), from the cache when younger than max_age."""
    key = f"dashboard:stats:v2:{project_id}"
    cached = cache.get(key) if max_age_seconds > 0 and now is None else None
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    now = now or timezone.now()
    stats, items, reviews = _heavy_stats(project_id=project_id, now=now)
    if max_age_seconds > 0:
        cache.set(key, (now, stats, items, reviews), max_age_seconds)
    return now, stats, items, reviews


def project_cost_summary_cached(*, project_id: int, max_age_seconds: int) -> CostSummary:
    """``project_cost_summary`` from the same (cached) rows as the dashboard: for the CSV export."""
    _, stats, items, reviews = project_heavy_stats(project_id=project_id, max_age_seconds=max_age_seconds)
    return project_cost_summary(
        project_id=project_id, stats=stats, reviews=reviews, consensus_labels=sum(r["n_consensus"] for r in items)
    )


def project_dashboard(
    *, project: Project, target_accuracy: float, now: datetime | None = None, max_age_seconds: int = 0
) -> Dashboard:
    """Every dashboard figure of one project (the caller has checked the manager role).

    With ``max_age_seconds`` > 0 the two heavy statements' rows are reused from the cache for
    that long (per project; the learning curve, confusion matrix and jobs are always fresh),
    and ``generated_at`` says when they were computed.
    """
    now, stats, items, reviews = project_heavy_stats(project_id=project.pk, now=now, max_age_seconds=max_age_seconds)
    progress = project_progress(project_id=project.pk, stats=items)
    cost = project_cost_summary(
        project_id=project.pk, stats=stats, reviews=reviews, consensus_labels=progress.consensus_done
    )
    throughput = project_throughput(
        project_id=project.pk,
        remaining_annotations=progress.remaining_annotations,
        cost_per_annotation=cost.cost_per_annotation,
        now=now,
        stats=stats,
    )
    confusion = project_confusion(project=project)
    return Dashboard(
        project_id=project.pk,
        project_name=project.name,
        generated_at=now,
        cost=cost,
        progress=progress,
        throughput=throughput,
        learning_curve=project_learning_curve(project=project, target_accuracy=target_accuracy),
        confusion=confusion,
        quality=project_quality(project=project, model_accuracy=confusion.accuracy, stats=stats, items=items),
        jobs=project_live_jobs(project_id=project.pk),
    )
