"""Reads for the queue API: what the workspace shows with a lease, and annotation lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from labeling.models import Annotation, Item, Lease, Membership, Project


@dataclass(frozen=True)
class Suggestion:
    label_id: int
    confidence: float


@dataclass(frozen=True)
class LeasedItem:
    """A lease with the item it reserves, shaped for the workspace."""

    lease_id: int
    expires_at: datetime
    item_id: int
    width: int
    height: int
    original_name: str
    metadata: dict[str, Any]
    suggestion: Suggestion | None

    @property
    def image_url(self) -> str:
        # Served by the membership-checked media views (labeling.views.media).
        return f"/files/items/{self.item_id}/image"

    @property
    def thumbnail_url(self) -> str:
        return f"/files/items/{self.item_id}/thumbnail"


def leased_item_get(*, lease: Lease, project: Project) -> LeasedItem:
    """The item of ``lease`` with the model's suggestion, in one query.

    The suggestion is shown only when the project shows suggestions and the item is not in
    the evaluation set (a label anchored on the model's guess would flatter the model there).
    """
    item = (
        Item.objects.select_related("prediction")
        .only(
            "id",
            "width",
            "height",
            "original_name",
            "metadata",
            "split",
            "prediction__label_id",
            "prediction__confidence",
        )
        .get(pk=lease.item_id)
    )
    suggestion = None
    if project.show_suggestions and item.split != Item.Split.EVALUATION:
        prediction = getattr(item, "prediction", None)
        if prediction is not None:
            suggestion = Suggestion(label_id=prediction.label_id, confidence=prediction.confidence)
    return LeasedItem(
        lease_id=lease.pk,
        expires_at=lease.expires_at,
        item_id=item.pk,
        width=item.width,
        height=item.height,
        original_name=item.original_name,
        metadata=item.metadata,
        suggestion=suggestion,
    )


def annotation_list(
    *,
    project: Project,
    membership: Membership,
    user: AbstractBaseUser,
    item_id: int | None = None,
    include_retracted: bool = False,
) -> QuerySet[Annotation]:
    """The project's annotations the caller may see, newest first.

    Managers and reviewers see everyone's; annotators only their own, so that nobody's
    answer is anchored on a colleague's.
    """
    qs = Annotation.objects.filter(item__project_id=project.pk).order_by("-submitted_at", "-id")
    if membership.role not in (Membership.Role.MANAGER, Membership.Role.REVIEWER):
        qs = qs.filter(annotator_id=user.pk)
    if item_id is not None:
        qs = qs.filter(item_id=item_id)
    if not include_retracted:
        qs = qs.filter(retracted_at__isnull=True)
    return qs
