"""Reads for the learning loop: training labels, cached embeddings, jobs, model versions.

NumPy only (no torch): the web process imports this module for the job and model APIs, and
the worker-side ``labeling.services.ml_runs`` uses it to load its inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, DecimalField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from numpy.typing import NDArray

from labeling.errors import NotFoundError
from labeling.models import (
    Annotation,
    ConsensusLabel,
    Embedding,
    Item,
    LabelClass,
    Membership,
    MLJob,
    ModelVersion,
    Project,
)
from labeling.selectors.access import ANNOTATE, project_access

EMBEDDING_DTYPE = np.dtype("<f4")  # Embedding.vector: float32 little-endian


def project_backbone(*, project: Project) -> str:
    """The backbone name the project's embeddings are keyed by (blank field = the server default)."""
    return project.backbone or settings.ML_DEFAULT_BACKBONE


def project_class_ids(*, project_id: int) -> list[int]:
    """Every current LabelClass id of the project in display order: the head's output order."""
    return list(LabelClass.objects.filter(project_id=project_id).order_by("order", "id").values_list("id", flat=True))


# --- training labels ---------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledItems:
    """Labeled items of one split: ``item_ids[i]`` has class ``class_ids[i]`` (LabelClass ids)."""

    item_ids: NDArray[np.int64]  # (n,)
    class_ids: NDArray[np.int64]  # (n,)
    n_consensus: int  # how many came from ConsensusLabel rows (the rest: majority of live annotations)

    def __len__(self) -> int:
        return int(self.item_ids.size)


def labeled_items(*, project_id: int, split: str) -> LabeledItems:
    """The current label of every labeled item of one split, ordered by item id.

    A ConsensusLabel row wins when there is one. An item with live annotations
    (``retracted_at IS NULL``) but no consensus row yet, e.g. right after a submit and before
    the consensus refresh ran, falls back to the majority of those annotations; ties go to
    the class first in the project's class order (``order``, then id), so the answer does
    not depend on row order.
    """
    consensus = dict(
        ConsensusLabel.objects.filter(item__project_id=project_id, item__split=split).values_list("item_id", "label_id")
    )
    votes = (
        Annotation.objects.filter(item__project_id=project_id, item__split=split, retracted_at__isnull=True)
        .exclude(item_id__in=ConsensusLabel.objects.filter(item__project_id=project_id).values("item_id"))
        .values("item_id", "label_id")
        .annotate(n=Count("id"))
    )
    rank = {cid: r for r, cid in enumerate(project_class_ids(project_id=project_id))}
    best: dict[int, tuple[int, int, int]] = {}  # item -> (-votes, class rank, class id): min wins
    for row in votes:
        key = (-row["n"], rank.get(row["label_id"], len(rank)), row["label_id"])
        if row["item_id"] not in best or key < best[row["item_id"]]:
            best[row["item_id"]] = key
    merged = dict(consensus)
    merged.update({item_id: key[2] for item_id, key in best.items()})
    ids = np.fromiter(sorted(merged), dtype=np.int64, count=len(merged))
    labels = np.fromiter((merged[i] for i in ids.tolist()), dtype=np.int64, count=len(merged))
    return LabeledItems(item_ids=ids, class_ids=labels, n_consensus=len(consensus))


def training_labels(*, project_id: int) -> LabeledItems:
    """Labels a model may be trained on: TRAIN split only, never the evaluation set."""
    return labeled_items(project_id=project_id, split=Item.Split.TRAIN)


def evaluation_labels(*, project_id: int) -> LabeledItems:
    """Labels of the evaluation set: what every model version is measured on."""
    return labeled_items(project_id=project_id, split=Item.Split.EVALUATION)


def consensus_label_count(*, project_id: int, split: str = Item.Split.TRAIN) -> int:
    """Consensus labels of one split: what the retrain cadence counts."""
    return ConsensusLabel.objects.filter(item__project_id=project_id, item__split=split).count()


def training_input_fingerprint(*, project: Project) -> str:
    """A digest of everything a training run reads, from aggregates (cheap at any size).

    Equal digests mean a retrain would see the same labels, classes and backbone, so a second
    request returns the first job instead of training again.
    """
    consensus = ConsensusLabel.objects.filter(item__project_id=project.pk).aggregate(
        n=Count("id"), last=Max("updated_at")
    )
    live = Annotation.objects.filter(item__project_id=project.pk).aggregate(
        n=Count("id", filter=Q(retracted_at__isnull=True)), last=Max("id"), retracted=Max("retracted_at")
    )
    parts = [
        "train",
        project_backbone(project=project),
        ",".join(map(str, project_class_ids(project_id=project.pk))),
        f"{consensus['n']}:{consensus['last']}",
        f"{live['n']}:{live['last']}:{live['retracted']}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# --- embeddings --------------------------------------------------------------------------


def item_list_missing_embeddings(*, project_id: int, backbone: str, limit: int | None = None) -> list[int]:
    """Ids of the project's items with no Embedding for ``backbone``, ascending."""
    qs = (
        Item.objects.filter(project_id=project_id)
        .exclude(embeddings__backbone=backbone)
        .order_by("id")
        .values_list("id", flat=True)
    )
    return list(qs[:limit] if limit is not None else qs)


def embedding_count(*, project_id: int, backbone: str) -> int:
    return Embedding.objects.filter(item__project_id=project_id, backbone=backbone).count()


def embedding_matrix(
    *, project_id: int, backbone: str, item_ids: Iterable[int] | None = None, chunk_size: int = 2000
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Cached embeddings as ``(ids (n,), X (n, d) float32)``, ordered by item id.

    ``item_ids`` (ids, or a ``values_list("id")`` queryset used as a subquery) restricts the
    rows; ids without an embedding are simply absent from the result, so callers align on the
    returned ids. Empty: ``ids`` (0,), ``X`` (0, 0).
    """
    qs = Embedding.objects.filter(item__project_id=project_id, backbone=backbone)
    if isinstance(item_ids, QuerySet):  # a subquery: no id list travels through Python
        qs = qs.filter(item_id__in=item_ids)
    elif item_ids is not None:
        wanted = list(item_ids)
        if not wanted:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        qs = qs.filter(item_id__in=wanted)
    ids: list[int] = []
    vectors: list[NDArray[np.float32]] = []
    for item_id, dim, vector in qs.order_by("item_id").values_list("item_id", "dim", "vector").iterator(chunk_size):
        ids.append(item_id)
        vectors.append(np.frombuffer(bytes(vector), dtype=EMBEDDING_DTYPE, count=dim))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    X = np.stack(vectors).astype(np.float32, copy=False)  # (n, d)
    return np.asarray(ids, dtype=np.int64), X


def align(ids: NDArray[np.int64], wanted: Sequence[int] | NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``ids`` (sorted ascending) of each of ``wanted``; every wanted id must be present."""
    pos = np.searchsorted(ids, np.asarray(wanted, dtype=np.int64))
    return pos.astype(np.int64)


# --- cost --------------------------------------------------------------------------------


def project_cost_so_far(*, project_id: int) -> Decimal:
    """Money spent on annotations so far: active time x hourly rate, or the price per label.

    Retracted annotations count too: the time was spent and paid for.
    """
    membership = Membership.objects.filter(project_id=project_id, user_id=OuterRef("annotator_id"))
    money = DecimalField(max_digits=14, decimal_places=4)
    rows = (
        Annotation.objects.filter(item__project_id=project_id)
        .values("annotator_id")
        .annotate(
            ms=Coalesce(Sum("duration_ms"), 0),
            n=Count("id"),
            rate=Subquery(membership.values("hourly_rate")[:1], output_field=money),
            per_label=Subquery(membership.values("price_per_label")[:1], output_field=money),
        )
    )
    total = Decimal(0)
    for row in rows:
        if row["per_label"] is not None:
            total += row["per_label"] * row["n"]
        elif row["rate"] is not None:
            total += row["rate"] * Decimal(row["ms"]) / Decimal(3_600_000)
    return total.quantize(Decimal("0.01"))


# --- jobs and model versions -------------------------------------------------------------


def ml_job_list(*, project_id: int) -> QuerySet[MLJob]:
    return MLJob.objects.filter(project_id=project_id).order_by("-created_at", "-id")


def ml_job_get(*, job_id: int, user: AbstractBaseUser | AnonymousUser) -> MLJob:
    """A job, if the user may see its project; NotFoundError otherwise (existence not revealed)."""
    job = MLJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFoundError("Job not found.")
    try:
        project_access(project_id=job.project_id, user=user, roles=ANNOTATE)
    except NotFoundError:
        raise NotFoundError("Job not found.")
    return job


def model_version_list(*, project_id: int) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project_id=project_id).order_by("number")


def learning_curve(*, project_id: int) -> list[dict[str, Any]]:
    """One point per model version: labels and money spent against evaluation-set quality."""
    points = []
    for mv in model_version_list(project_id=project_id):
        m = mv.metrics or {}
        points.append(
            {
                "model_version": mv.number,
                "n_train": mv.n_train,
                "cost": mv.cost_at_training,
                "n_eval": m.get("n"),
                "accuracy": m.get("accuracy"),
                "macro_f1": m.get("macro_f1"),
                "ece": m.get("ece"),
                "created_at": mv.created_at,
            }
        )
    return points


def item_priority_map(*, project_id: int, split: str | None = None) -> dict[int, float]:
    qs = Item.objects.filter(project_id=project_id)
    if split is not None:
        qs = qs.filter(split=split)
    return dict(qs.values_list("id", "priority"))


__all__ = [
    "EMBEDDING_DTYPE",
    "LabeledItems",
    "align",
    "consensus_label_count",
    "embedding_count",
    "embedding_matrix",
    "evaluation_labels",
    "item_list_missing_embeddings",
    "item_priority_map",
    "labeled_items",
    "learning_curve",
    "ml_job_get",
    "ml_job_list",
    "model_version_list",
    "project_backbone",
    "project_class_ids",
    "project_cost_so_far",
    "training_input_fingerprint",
    "training_labels",
]
