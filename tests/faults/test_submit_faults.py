"""Faulty clients, through the HTTP API with real token authentication and real PostgreSQL.

A client that submits the same annotation twice (a retry after a lost response, or a
double click racing itself), submits after its lease expired and the item went to someone
else, or submits for an item it never leased: each gets a clear 4xx with a stable ``code``
(or, for an exact repeat, the stored annotation back), and the database holds exactly one
annotation per answer given.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Annotation, Item, Lease, Project
from labeling.services.queue import leases_reclaim_expired
from tests.factories import project_with_members
from tests.labeling.test_queue_services import label_of, make_items

pytestmark = pytest.mark.django_db


def _client(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _next(client: APIClient, project: Project) -> dict:  # type: ignore[type-arg]
    res = client.get(f"/api/v1/projects/{project.pk}/next/")
    assert res.status_code == 200, res.content
    return res.json()


def _submit(client: APIClient, lease_id: int, label_id: int, client_id: str):  # type: ignore[no-untyped-def]
    body = {"lease": lease_id, "label": label_id, "client_id": client_id, "duration_ms": 900}
    return client.post("/api/v1/annotations/", body, format="json")


def _error(res) -> str:  # type: ignore[no-untyped-def]
    body = res.json()
    assert set(body) == {"code", "message", "extra"}, body
    return str(body["code"])


def test_same_annotation_twice_is_stored_once() -> None:
    project, _, (ann,) = project_with_members()
    make_items(project, 2)
    label = label_of(project)
    client = _client(ann)
    lease_id = _next(client, project)["lease"]["id"]
    cid = str(uuid.uuid4())

    first = _submit(client, lease_id, label.pk, cid)
    repeat = _submit(client, lease_id, label.pk, cid)  # the client lost the first response and retries
    assert first.status_code == 201 and repeat.status_code == 200
    assert repeat.json() == first.json()

    # The same lease answered again under a new client id (a second click, another tab).
    again = _submit(client, lease_id, label.pk, str(uuid.uuid4()))
    assert again.status_code == 409 and _error(again) == "lease_not_open"
    # The same client id reused for a different answer.
    other = label.__class__.objects.filter(project=project).exclude(pk=label.pk).first()
    conflict = _submit(client, lease_id, other.pk, cid)
    assert conflict.status_code == 409 and _error(conflict) == "client_id_conflict"

    assert Annotation.objects.filter(lease_id=lease_id).count() == 1
    item = Item.objects.get(leases__pk=lease_id)
    assert item.annotation_count == 1 and item.lease_count == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_double_submit_is_stored_once() -> None:
    """Eight threads send the same submit at once (a double click times four): one row."""
    project, _, (ann,) = project_with_members()
    make_items(project, 1)
    label = label_of(project)
    lease_id = _next(_client(ann), project)["lease"]["id"]
    cid = str(uuid.uuid4())
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        try:
            client = _client(ann)
            barrier.wait()
            statuses.append(_submit(client, lease_id, label.pk, cid).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [200] * 7 + [201]
    assert Annotation.objects.filter(annotator=ann).count() == 1
    item = Item.objects.get(project=project)
    assert (item.annotation_count, item.lease_count) == (1, 0)


def test_submit_after_the_lease_expired_and_the_item_went_to_someone_else() -> None:
    project, _, (slow, fast) = project_with_members(n_annotators=2)
    make_items(project, 1)  # overlap 1: one slot
    label = label_of(project)
    slow_client, fast_client = _client(slow), _client(fast)
    lease_id = _next(slow_client, project)["lease"]["id"]

    Lease.objects.filter(pk=lease_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert leases_reclaim_expired() == 1
    taken = _next(fast_client, project)
    assert _submit(fast_client, taken["lease"]["id"], label.pk, str(uuid.uuid4())).status_code == 201

    late = _submit(slow_client, lease_id, label.pk, str(uuid.uuid4()))
    assert late.status_code == 409 and _error(late) == "lease_expired"
    item = Item.objects.get(project=project)
    assert Annotation.objects.filter(item=item).count() == 1
    assert (item.annotation_count, item.lease_count, item.status) == (1, 0, Item.Status.DONE)


def test_submit_after_the_lease_expired_while_the_slot_is_still_free_is_accepted_once() -> None:
    """Nobody wanted the slot meanwhile: the late answer is worth keeping (and kept once)."""
    project, _, (ann,) = project_with_members()
    make_items(project, 1)
    label = label_of(project)
    client = _client(ann)
    lease_id = _next(client, project)["lease"]["id"]
    Lease.objects.filter(pk=lease_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    leases_reclaim_expired()
    cid = str(uuid.uuid4())
    assert _submit(client, lease_id, label.pk, cid).status_code == 201
    assert _submit(client, lease_id, label.pk, cid).status_code == 200
    item = Item.objects.get(project=project)
    assert Annotation.objects.filter(item=item).count() == 1
    assert (item.annotation_count, item.lease_count) == (1, 0)


def test_submit_for_an_item_never_leased() -> None:
    project, _, (alice, mallory) = project_with_members(n_annotators=2)
    make_items(project, 2)
    label = label_of(project)
    alice_lease = _next(_client(alice), project)["lease"]["id"]
    client = _client(mallory)

    for lease_id in (alice_lease, alice_lease + 10_000):  # someone else's lease; no such lease
        res = _submit(client, lease_id, label.pk, str(uuid.uuid4()))
        assert res.status_code == 404 and _error(res) == "not_found"
    # A label of another project, on a lease of one's own.
    own = _next(client, project)["lease"]["id"]
    foreign, _, _ = project_with_members()
    res = _submit(client, own, label_of(foreign).pk, str(uuid.uuid4()))
    assert res.status_code == 400 and _error(res) == "invalid_label"
    # Garbage in the body.
    res = client.post("/api/v1/annotations/", {"lease": "x", "label": label.pk}, format="json")
    assert res.status_code == 400 and _error(res) == "validation_error"
    # No credentials at all.
    res = APIClient().post("/api/v1/annotations/", {}, format="json")
    assert res.status_code in (401, 403)

    assert Annotation.objects.count() == 0
    assert Lease.objects.get(pk=alice_lease).state == Lease.State.ACTIVE
    assert sorted(Item.objects.filter(project=project).values_list("lease_count", flat=True)) == [1, 1]
