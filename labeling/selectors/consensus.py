"""Reads for consensus: the review queue and the quality summary (human vs panel vs model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, F, Q

from labeling.models import Annotation, ConsensusLabel, Item, MLJob, Project, Review

# A reader needs this many answers before their accuracy is a fair "human-level" candidate.
MIN_ANSWERS_FOR_HUMAN_LEVEL = 20


def review_next(*, project: Project) -> Item | None:
    """The oldest item waiting for a reviewer."""
    return (
        Item.objects.filter(project=project, status=Item.Status.REVIEW)
        .select_related("consensus", "prediction")
        .order_by("id")
        .first()
    )


def review_item_annotations(*, item: Item) -> list[dict[str, Any]]:
    return list(
        Annotation.objects.filter(item=item, retracted_at__isnull=True)
        .order_by("submitted_at")
        .values("id", "label_id", "duration_ms", "submitted_at", annotator_name=F("annotator__username"))
    )


@dataclass(frozen=True)
class QualitySummary:
    method: str | None
    human_level_error: float | None  # best annotator's estimated error
    panel_error: float | None  # the consensus's estimated error
    model_error: float | None  # 1 - active model accuracy on the evaluation set
    annotators: list[dict[str, Any]]  # per annotator: vs consensus, vs gold, estimated
    agreement: dict[str, Any] | None
    reviews: int
    in_review: int
    computed_at: str | None


def quality_summary(*, project: Project) -> QualitySummary:
    """Human-level vs panel vs model error, per-annotator accuracy, agreement (None = not yet)."""
    job = (
        MLJob.objects.filter(project=project, kind=MLJob.Kind.CONSENSUS, status=MLJob.Status.SUCCEEDED)
        .order_by("-finished_at")
        .first()
    )
    result = job.result if job else {}
    estimated = {a["annotator_id"]: a for a in result.get("annotators", [])}

    live = Annotation.objects.filter(item__project=project, retracted_at__isnull=True)
    vs_consensus = {
        row["annotator_id"]: row
        for row in live.filter(item__consensus__isnull=False)
        .exclude(item__consensus__method__in=[ConsensusLabel.Method.GOLD])
        .values("annotator_id")
        .annotate(
            n=Count("id"),
            agree=Count("id", filter=Q(label_id=F("item__consensus__label_id"))),
            name=F("annotator__username"),
        )
    }
    vs_gold = {
        row["annotator_id"]: row
        for row in live.filter(item__gold_label__isnull=False)
        .values("annotator_id")
        .annotate(n=Count("id"), agree=Count("id", filter=Q(label_id=F("item__gold_label_id"))))
    }
    annotators = []
    for annotator_id in sorted(set(vs_consensus) | set(vs_gold) | set(estimated)):
        c, g, e = vs_consensus.get(annotator_id), vs_gold.get(annotator_id), estimated.get(annotator_id)
        annotators.append(
            {
                "annotator_id": annotator_id,
                "name": c["name"] if c else None,
                "n_vs_consensus": c["n"] if c else 0,
                "accuracy_vs_consensus": c["agree"] / c["n"] if c and c["n"] else None,
                "n_gold": g["n"] if g else 0,
                "accuracy_vs_gold": g["agree"] / g["n"] if g and g["n"] else None,
                "estimated_accuracy": e["accuracy"] if e else None,
                "n_answers": e["n"] if e else (c["n"] if c else 0),
            }
        )
    candidates = [
        a["estimated_accuracy"]
        for a in annotators
        if a["estimated_accuracy"] is not None and a["n_answers"] >= MIN_ANSWERS_FOR_HUMAN_LEVEL
    ]
    model = project.active_model
    accuracy = (model.metrics or {}).get("accuracy") if model else None
    return QualitySummary(
        method=result.get("method"),
        human_level_error=(1.0 - max(candidates)) if candidates else None,
        panel_error=result.get("panel_error"),
        model_error=(1.0 - float(accuracy)) if accuracy is not None else None,
        annotators=annotators,
        agreement=result.get("agreement"),
        reviews=Review.objects.filter(item__project=project).count(),
        in_review=Item.objects.filter(project=project, status=Item.Status.REVIEW).count(),
        computed_at=job.finished_at.isoformat() if job and job.finished_at else None,
    )
