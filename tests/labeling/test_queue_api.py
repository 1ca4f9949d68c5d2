"""HTTP contract of the queue API: status codes, error codes and the shapes the workspace uses."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Annotation, Item, Lease, Membership, ModelVersion, Prediction, Project
from tests.factories import MembershipFactory, UserFactory, project_with_members
from tests.labeling.test_queue_services import label_of, make_items

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client(api_client, user):  # type: ignore[no-untyped-def]
    api_client.force_authenticate(user)
    return api_client


def _next(client, project: Project, exclude: str | None = None):  # type: ignore[no-untyped-def]
    query = f"?exclude={exclude}" if exclude is not None else ""
    return client.get(f"/api/v1/projects/{project.pk}/next/{query}")


def _submit(client, lease_id: int, label_id: int, client_id: str | None = None, **extra):  # type: ignore[no-untyped-def]
    body = {"lease": lease_id, "label": label_id, "client_id": client_id or str(uuid.uuid4()), "duration_ms": 1234}
    body.update(extra)
    return client.post("/api/v1/annotations/", body, format="json")


def test_next_returns_the_lease_item_and_suggestion(api_client, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    (item,) = make_items(project, 1)
    Item.objects.filter(pk=item.pk).update(metadata={"patient": "p1"})
    label = label_of(project)
    version = ModelVersion.objects.create(project=project, number=1, backbone="b", class_ids=[label.pk], artifact="x")
    Prediction.objects.create(item=item, model_version=version, label=label, confidence=0.75)
    client = _client(api_client, ann)

    with django_assert_max_num_queries(14):
        res = _next(client, project)

    assert res.status_code == 200
    body = res.json()
    lease = Lease.objects.get(annotator=ann)
    assert body["lease"]["id"] == lease.pk and body["lease"]["expires_at"]
    assert body["item"] == {
        "id": item.pk,
        "image_url": f"/files/items/{item.pk}/image",
        "thumbnail_url": f"/files/items/{item.pk}/thumbnail",
        "width": 32,
        "height": 24,
        "original_name": item.original_name,
        "metadata": {"patient": "p1"},
    }
    assert body["suggestion"] == {"label_id": label.pk, "confidence": 0.75}


def test_next_without_suggestions_and_204_when_empty(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    Project.objects.filter(pk=project.pk).update(show_suggestions=False)
    make_items(project, 1)
    client = _client(api_client, ann)
    first = _next(client, project)
    assert first.status_code == 200 and first.json()["suggestion"] is None
    assert _next(client, project, exclude=str(first.json()["lease"]["id"])).status_code == 204


def test_next_prefetch_exclude_and_hoarding_guard(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    make_items(project, 3)
    client = _client(api_client, ann)
    a = _next(client, project).json()["lease"]["id"]
    assert _next(client, project).json()["lease"]["id"] == a  # reload: resume
    b = _next(client, project, exclude=str(a)).json()["lease"]["id"]
    assert b != a
    res = _next(client, project, exclude=f"{a},{b}")
    assert res.status_code == 409 and res.json()["code"] == "too_many_leases"
    bad = _next(client, project, exclude="1,x")
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"


@pytest.mark.parametrize("role", [Membership.Role.REVIEWER, Membership.Role.MANAGER])
def test_reviewers_and_managers_may_pull(api_client, role) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    make_items(project, 1)
    user = MembershipFactory(project=project, role=role).user
    assert _next(_client(api_client, user), project).status_code == 200


def test_non_members_get_404_everywhere(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    make_items(project, 1)
    lease_id = _next(_client(api_client, ann), project).json()["lease"]["id"]
    outsider = _client(api_client, UserFactory())
    assert _next(outsider, project).json()["code"] == "not_found"
    assert _next(outsider, project).status_code == 404
    assert outsider.get(f"/api/v1/projects/{project.pk}/annotations/").status_code == 404
    assert _submit(outsider, lease_id, label_of(project).pk).status_code == 404
    assert outsider.post(f"/api/v1/leases/{lease_id}/skip/").status_code == 404


def test_anonymous_is_refused(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    assert _next(api_client, project).status_code in (401, 403)


def test_submit_201_then_200_on_repeat_and_409_on_a_changed_answer(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    make_items(project, 1)
    client = _client(api_client, ann)
    lease_id = _next(client, project).json()["lease"]["id"]
    label = label_of(project)
    cid = str(uuid.uuid4())
    started = (timezone.now() - timedelta(seconds=3)).isoformat()

    first = _submit(client, lease_id, label.pk, cid, started_at=started, suggestion_accepted=False)
    again = _submit(client, lease_id, label.pk, cid, started_at=started)

    assert first.status_code == 201 and again.status_code == 200
    assert first.json() == again.json()
    body = first.json()
    assert set(body) == {"id", "lease", "item", "label", "client_id", "duration_ms", "submitted_at"}
    assert (body["lease"], body["label"], body["client_id"], body["duration_ms"]) == (lease_id, label.pk, cid, 1234)
    assert Annotation.objects.count() == 1
    other = project.classes.exclude(pk=label.pk).first()
    conflict = _submit(client, lease_id, other.pk, cid)
    assert conflict.status_code == 409 and conflict.json()["code"] == "client_id_conflict"
    # A fresh client id on the submitted lease: the lease is closed.
    closed = _submit(client, lease_id, label.pk)
    assert closed.status_code == 409 and closed.json()["code"] == "lease_not_open"


def test_submit_errors(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann, bob) = project_with_members(n_annotators=2)
    other_project, _, _ = project_with_members()
    make_items(project, 2)
    client = _client(api_client, ann)
    lease_id = _next(client, project).json()["lease"]["id"]

    invalid = _submit(client, lease_id, label_of(other_project).pk)
    assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_label"
    missing = client.post("/api/v1/annotations/", {"lease": lease_id}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "validation_error"
    assert set(missing.json()["extra"]["fields"]) >= {"label", "client_id", "duration_ms"}
    not_yours = _submit(_client(api_client, bob), lease_id, label_of(project).pk)
    assert not_yours.status_code == 404 and not_yours.json()["code"] == "not_found"


def test_expired_lease_submit_is_409_when_someone_else_took_the_item(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann, bob) = project_with_members(n_annotators=2)
    make_items(project, 1)
    lease_id = _next(_client(api_client, ann), project).json()["lease"]["id"]
    Lease.objects.filter(pk=lease_id).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert _next(_client(api_client, bob), project).status_code == 200  # reclaimed inline, leased to bob
    res = _submit(_client(api_client, ann), lease_id, label_of(project).pk)
    assert res.status_code == 409 and res.json()["code"] == "lease_expired"


def test_skip_and_release(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    make_items(project, 2)
    client = _client(api_client, ann)
    a = _next(client, project).json()["lease"]["id"]
    b = _next(client, project, exclude=str(a)).json()["lease"]["id"]

    skip = client.post(f"/api/v1/leases/{a}/skip/")
    release = client.post(f"/api/v1/leases/{b}/release/")

    assert skip.status_code == 200 and skip.json() == {"id": a, "state": "skipped"}
    assert release.status_code == 200 and release.json() == {"id": b, "state": "released"}
    assert client.post(f"/api/v1/leases/{a}/skip/").status_code == 200  # a retried skip
    again = client.post(f"/api/v1/leases/{a}/release/")
    assert again.status_code == 409 and again.json()["code"] == "lease_not_open"
    assert _next(client, project).status_code == 204  # neither item comes back to ann


def test_undo_returns_the_item_again(api_client) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    (item,) = make_items(project, 1)
    client = _client(api_client, ann)
    shown = _next(client, project).json()
    annotation_id = _submit(client, shown["lease"]["id"], label_of(project).pk).json()["id"]

    res = client.post(f"/api/v1/annotations/{annotation_id}/undo/")

    assert res.status_code == 200
    body = res.json()
    assert body["lease"]["id"] == shown["lease"]["id"] and body["item"] == shown["item"]
    assert "suggestion" in body
    retried = client.post(f"/api/v1/annotations/{annotation_id}/undo/")
    assert retried.status_code == 200 and retried.json()["lease"] == body["lease"]  # idempotent
    second = _submit(client, shown["lease"]["id"], label_of(project).pk).json()["id"]
    Annotation.objects.filter(pk=second).update(submitted_at=timezone.now() - timedelta(hours=1))
    too_late = client.post(f"/api/v1/annotations/{second}/undo/")
    assert too_late.status_code == 409 and too_late.json()["code"] == "undo_window_passed"


def test_annotation_list_annotators_see_only_their_own(api_client) -> None:  # type: ignore[no-untyped-def]
    project, manager, (ann, bob) = project_with_members(overlap=2, n_annotators=2)
    reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    make_items(project, 1)
    label = label_of(project)
    for user in (ann, bob):
        client = _client(api_client, user)
        _submit(client, _next(client, project).json()["lease"]["id"], label.pk)
    url = f"/api/v1/projects/{project.pk}/annotations/"

    mine = _client(api_client, ann).get(url).json()
    assert mine["count"] == 1 and [a["annotator"] for a in mine["results"]] == [ann.pk]
    for boss in (manager, reviewer):
        everyone = _client(api_client, boss).get(url).json()
        assert everyone["count"] == 2
        assert {a["annotator"] for a in everyone["results"]} == {ann.pk, bob.pk}
    paged = _client(api_client, manager).get(url + "?limit=1").json()
    assert paged["count"] == 2 and len(paged["results"]) == 1 and paged["next"]
