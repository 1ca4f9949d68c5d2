"""The workspace's round trip through the queue API, as workspace.js makes it.

A browser-like client (session login, CSRF enforced, X-CSRFToken from the cookie the
workspace page sets) leases, labels and gets the next item. The JSON shapes asserted here
are the ones static/labeling/workspace.js reads.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling.models import Annotation
from tests.factories import ItemFactory, project_with_members

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _post(client: Client, url: str, body: dict) -> object:
    return client.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)


def test_label_round_trip_through_the_api() -> None:
    project, _manager, (annotator,) = project_with_members(n_annotators=1)
    for _ in range(3):
        ItemFactory(project=project)
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=annotator.username, password="pw-for-tests-123")
    assert client.get(reverse("workspace", args=[project.pk])).status_code == 200  # sets csrftoken
    next_url = f"/api/v1/projects/{project.pk}/next/"

    first = client.get(next_url)
    assert first.status_code == 200, first.content
    data = first.json()
    assert {"lease", "item", "suggestion"} <= data.keys()
    assert {"id", "expires_at"} <= data["lease"].keys()
    assert {"id", "image_url", "width", "height", "original_name"} <= data["item"].keys()

    # The prefetch: excluding the lease on screen gives another item.
    prefetched = client.get(next_url, {"exclude": data["lease"]["id"]})
    assert prefetched.status_code == 200, prefetched.content
    assert prefetched.json()["item"]["id"] != data["item"]["id"]

    label = project.classes.first()
    body = {
        "lease": data["lease"]["id"],
        "label": label.pk,
        "client_id": str(uuid.uuid4()),
        "duration_ms": 1234,
        "started_at": timezone.now().isoformat(),
        "suggestion_accepted": False,
    }
    created = _post(client, "/api/v1/annotations/", body)
    assert created.status_code == 201, created.content
    annotation = created.json()
    assert annotation["lease"] == data["lease"]["id"] and annotation["item"] == data["item"]["id"]

    # The outbox retries with the same client_id: accepted once, answered again.
    again = _post(client, "/api/v1/annotations/", body)
    assert again.status_code in (200, 201), again.content
    assert again.json()["id"] == annotation["id"]
    assert Annotation.objects.filter(annotator=annotator).count() == 1

    after = client.get(next_url, {"exclude": prefetched.json()["lease"]["id"]})
    assert after.status_code == 200, after.content
    assert after.json()["item"]["id"] not in {data["item"]["id"], prefetched.json()["item"]["id"]}
    assert client.get(after.json()["item"]["image_url"]).status_code == 200

    # Undo within the window hands the item back in the shape of next.
    undone = _post(client, f"/api/v1/annotations/{annotation['id']}/undo/", {})
    assert undone.status_code == 200, undone.content
    assert undone.json()["item"]["id"] == data["item"]["id"]

    skipped = _post(client, f"/api/v1/leases/{after.json()['lease']['id']}/skip/", {})
    assert skipped.status_code == 200, skipped.content
    released = _post(client, f"/api/v1/leases/{prefetched.json()['lease']['id']}/release/", {})
    assert released.status_code == 200, released.content


def test_next_is_204_when_nothing_is_left() -> None:
    project, _manager, (annotator,) = project_with_members(n_annotators=1)
    client = Client()
    client.force_login(annotator)
    assert client.get(f"/api/v1/projects/{project.pk}/next/").status_code == 204
