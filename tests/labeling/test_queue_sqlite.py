"""The queue on the embedded default (SQLite): a sequential round trip through every service.

Nothing here needs PostgreSQL, so it runs on a laptop's SQLite (the portable path, inside
BEGIN IMMEDIATE) and on PostgreSQL in CI (the SKIP LOCKED path) alike.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Item, Lease
from labeling.services.queue import (
    annotation_submit,
    annotation_undo,
    lease_next,
    lease_release,
    lease_skip,
    leases_reclaim_expired,
    queue_counters_check,
)
from tests.factories import project_with_members
from tests.labeling.test_queue_services import label_of, make_items

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_sequential_round_trip_on_the_default_database() -> None:
    project, _, (ann, bob, cat) = project_with_members(overlap=2, n_annotators=3)
    items = make_items(project, 3)
    label_id = label_of(project).pk

    def answer(user, lease: Lease):  # type: ignore[no-untyped-def]
        return annotation_submit(
            user=user, lease_id=lease.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=10
        )[0]

    la = lease_next(project=project, user=ann)
    lb = lease_next(project=project, user=bob)
    assert la.item_id == lb.item_id == items[0].pk  # type: ignore[union-attr]
    assert lease_next(project=project, user=cat).item_id == items[1].pk  # type: ignore[union-attr]
    annotation = answer(ann, la)
    assert annotation_undo(user=ann, annotation_id=annotation.pk).pk == la.pk  # type: ignore[union-attr]
    answer(ann, la)
    lease_skip(user=bob, lease_id=lb.pk)  # type: ignore[union-attr]
    prefetched = lease_next(project=project, user=ann, exclude_lease_ids=[])
    lease_release(user=ann, lease_id=prefetched.pk)  # type: ignore[union-attr]
    Lease.objects.filter(annotator=cat, state=Lease.State.ACTIVE).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert leases_reclaim_expired(project=project) == 1
    assert queue_counters_check(project=project) == []

    for user in (ann, bob, cat):
        while (lease := lease_next(project=project, user=user)) is not None:
            answer(user, lease)
    statuses = dict(Item.objects.filter(project=project).values_list("id", "status"))
    # Whatever could still be served was: an item is done, or every annotator has seen it.
    assert queue_counters_check(project=project) == []
    assert Item.Status.FULL not in statuses.values()
