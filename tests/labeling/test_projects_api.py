"""HTTP contract of /api/v1/projects/, its classes and members, and /api/v1/auth/token/."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from labeling.models import Annotation, LabelClass, Lease, Membership, Project
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

CLASSES = [
    {"name": "cat", "shortcut": "1", "color": "#ff0000"},
    {"name": "dog", "shortcut": "2"},
]


@pytest.fixture(autouse=True)
def _fresh_cache(settings) -> None:  # type: ignore[no-untyped-def]
    cache.clear()  # throttle counters live in the cache
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users


def _create(client, **overrides):  # type: ignore[no-untyped-def]
    body = {"name": "Chest X-ray", "classes": CLASSES, "overlap": 3, "max_overlap": 5, "eval_fraction": 0.2}
    body.update(overrides)
    return client.post("/api/v1/projects/", body, format="json")


def annotate(item, user, label):  # type: ignore[no-untyped-def]
    now = timezone.now()
    lease = Lease.objects.create(
        item=item, annotator=user, project=item.project, expires_at=now, state=Lease.State.SUBMITTED
    )
    return Annotation.objects.create(item=item, annotator=user, lease=lease, label=label, started_at=now)


# --- projects -------------------------------------------------------------------------


def test_create_project_makes_creator_manager(api_client) -> None:
    user = UserFactory()
    api_client.force_authenticate(user)
    response = _create(
        api_client,
        lease_minutes=15,
        instructions="Look at the lungs.",
        strategy="entropy",
        show_suggestions=False,
        retrain_every=20,
    )
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["role"] == "manager"
    assert [c["name"] for c in data["classes"]] == ["cat", "dog"]
    assert data["classes"][0]["color"] == "#ff0000"
    assert (data["overlap"], data["max_overlap"], data["eval_fraction"]) == (3, 5, 0.2)
    assert (data["lease_minutes"], data["strategy"], data["show_suggestions"], data["retrain_every"]) == (
        15,
        "entropy",
        False,
        20,
    )
    project = Project.objects.get(pk=data["id"])
    assert project.created_by == user
    assert Membership.objects.get(project=project, user=user).role == Membership.Role.MANAGER


def test_max_overlap_defaults_to_overlap(api_client) -> None:
    api_client.force_authenticate(UserFactory())
    response = api_client.post("/api/v1/projects/", {"name": "p", "classes": CLASSES, "overlap": 2}, format="json")
    assert response.status_code == 201
    assert response.json()["max_overlap"] == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"classes": [{"name": "only"}]}, "classes"),
        ({"classes": [{"name": "a"}, {"name": "A"}]}, "classes"),
        ({"classes": [{"name": "a", "shortcut": "x"}, {"name": "b", "shortcut": "x"}]}, "classes"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"eval_fraction": -0.1}, "eval_fraction"),
        ({"overlap": 0, "max_overlap": 1}, "overlap"),
        ({"overlap": 3, "max_overlap": 2}, "max_overlap"),
        ({"strategy": "astrology"}, "strategy"),
        ({"classes": [{"name": "a", "color": "red"}, {"name": "b"}]}, "classes"),
    ],
)
def test_create_project_validation(api_client, overrides, field) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(UserFactory())
    response = _create(api_client, **overrides)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["extra"]["fields"]
    assert not Project.objects.exists()


def test_create_requires_authentication(api_client) -> None:
    assert _create(api_client).status_code in (401, 403)


def test_create_can_require_staff(api_client, settings) -> None:
    settings.PROJECT_CREATE_REQUIRES_STAFF = True
    api_client.force_authenticate(UserFactory())
    response = _create(api_client)
    assert response.status_code == 403
    assert response.json()["code"] == "staff_required"
    api_client.force_authenticate(UserFactory(is_staff=True))
    assert _create(api_client).status_code == 201


def test_list_shows_only_my_projects_paginated(api_client) -> None:
    mine = [project_with_members()[0] for _ in range(3)]
    other, _, _ = project_with_members()
    me = UserFactory()
    for i, project in enumerate(mine):
        MembershipFactory(project=project, user=me, role="manager" if i == 0 else "annotator")
    api_client.force_authenticate(me)
    response = api_client.get("/api/v1/projects/?limit=2")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]
    ids = {p["id"] for p in body["results"]} | {p["id"] for p in api_client.get(body["next"]).json()["results"]}
    assert ids == {p.pk for p in mine}
    assert other.pk not in ids
    roles = {p["id"]: p["role"] for p in api_client.get("/api/v1/projects/").json()["results"]}
    assert roles[mine[0].pk] == "manager"
    assert roles[mine[1].pk] == "annotator"


def test_get_project_members_only(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    outsider = UserFactory()
    api_client.force_authenticate(annotator)
    response = api_client.get(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 200
    assert response.json()["role"] == "annotator"
    assert [c["name"] for c in response.json()["classes"]] == ["cat", "dog", "bird"]
    api_client.force_authenticate(outsider)
    response = api_client.get(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert api_client.get("/api/v1/projects/999999/").status_code == 404


def test_patch_project(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    api_client.force_authenticate(manager)
    response = api_client.patch(f"/api/v1/projects/{project.pk}/", {"name": "Renamed", "max_overlap": 3}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["name"], response.json()["max_overlap"]) == ("Renamed", 3)
    # the combined settings are validated: overlap above the stored max_overlap is refused
    response = api_client.patch(f"/api/v1/projects/{project.pk}/", {"overlap": 4}, format="json")
    assert response.status_code == 400
    assert "max_overlap" in response.json()["extra"]["fields"]
    project.refresh_from_db()
    assert (project.name, project.overlap, project.max_overlap) == ("Renamed", 1, 3)


def test_annotator_cannot_change_or_delete_project(api_client) -> None:
    project, _, (annotator,) = project_with_members()
    api_client.force_authenticate(annotator)
    response = api_client.patch(f"/api/v1/projects/{project.pk}/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "role_required"
    response = api_client.delete(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 403
    assert response.json()["code"] == "role_required"
    assert Project.objects.filter(pk=project.pk).exists()


def test_delete_project_with_annotations(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    item = ItemFactory(project=project)
    annotate(item, annotator, project.classes.first())
    api_client.force_authenticate(manager)
    assert api_client.delete(f"/api/v1/projects/{project.pk}/").status_code == 204
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not Annotation.objects.exists()


# --- classes --------------------------------------------------------------------------


def test_classes_list_add_update_delete(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    api_client.force_authenticate(annotator)
    response = api_client.get(f"/api/v1/projects/{project.pk}/classes/")
    assert response.status_code == 200
    assert [c["name"] for c in response.json()["results"]] == ["cat", "dog", "bird"]

    api_client.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/classes/"
    response = api_client.post(url, {"name": "fish", "shortcut": "4", "color": "#00ff00"}, format="json")
    assert response.status_code == 201, response.json()
    fish = response.json()
    assert fish["order"] == 3  # after the last
    assert api_client.post(url, {"name": "Fish"}, format="json").json()["code"] == "validation_error"
    assert api_client.post(url, {"name": "eel", "shortcut": "1"}, format="json").status_code == 400

    response = api_client.patch(f"{url}{fish['id']}/", {"name": "salmon", "order": 0}, format="json")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["order"]) == ("salmon", 0)
    assert api_client.patch(f"{url}{fish['id']}/", {"name": "cat"}, format="json").status_code == 400

    assert api_client.delete(f"{url}{fish['id']}/").status_code == 204
    assert not LabelClass.objects.filter(pk=fish["id"]).exists()


def test_delete_class_with_annotations_is_refused(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    cat = project.classes.get(name="cat")
    annotate(ItemFactory(project=project), annotator, cat)
    api_client.force_authenticate(manager)
    response = api_client.delete(f"/api/v1/projects/{project.pk}/classes/{cat.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "class_in_use"
    assert LabelClass.objects.filter(pk=cat.pk).exists()


def test_project_keeps_two_classes(api_client) -> None:
    project, manager, _ = project_with_members(classes=["yes", "no"])
    api_client.force_authenticate(manager)
    no = project.classes.get(name="no")
    response = api_client.delete(f"/api/v1/projects/{project.pk}/classes/{no.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "too_few_classes"


def test_annotator_cannot_change_classes(api_client) -> None:
    project, _, (annotator,) = project_with_members()
    cat = project.classes.get(name="cat")
    api_client.force_authenticate(annotator)
    base = f"/api/v1/projects/{project.pk}/classes/"
    for response in (
        api_client.post(base, {"name": "fish"}, format="json"),
        api_client.patch(f"{base}{cat.pk}/", {"name": "kitty"}, format="json"),
        api_client.delete(f"{base}{cat.pk}/"),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "role_required"


# --- members --------------------------------------------------------------------------


def test_members_add_list_update_remove(api_client) -> None:
    project, manager, (annotator,) = project_with_members()
    newcomer = UserFactory(username="radiologist")
    api_client.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/members/"
    response = api_client.post(
        url, {"username": "radiologist", "role": "annotator", "hourly_rate": "100.00"}, format="json"
    )
    assert response.status_code == 201, response.json()
    member = response.json()
    assert (member["username"], member["role"], member["hourly_rate"]) == ("radiologist", "annotator", "100.00")
    assert member["user_id"] == newcomer.pk

    by_id = UserFactory()
    response = api_client.post(url, {"user_id": by_id.pk, "role": "reviewer", "price_per_label": "0.5"}, format="json")
    assert response.status_code == 201
    assert response.json()["price_per_label"] == "0.5000"

    assert api_client.post(url, {"username": "radiologist"}, format="json").json()["code"] == "already_member"
    response = api_client.post(url, {"username": "nobody-here"}, format="json")
    assert response.status_code == 400
    assert "username" in response.json()["extra"]["fields"]
    assert api_client.post(url, {"role": "annotator"}, format="json").status_code == 400

    listing = api_client.get(url).json()
    assert listing["count"] == 4
    assert {m["username"] for m in listing["results"]} >= {"radiologist", manager.username, annotator.username}

    response = api_client.patch(f"{url}{member['id']}/", {"hourly_rate": "120", "role": "reviewer"}, format="json")
    assert response.status_code == 200
    assert (response.json()["hourly_rate"], response.json()["role"]) == ("120.00", "reviewer")
    assert Membership.objects.get(pk=member["id"]).hourly_rate == Decimal("120")

    assert api_client.delete(f"{url}{member['id']}/").status_code == 204
    assert not Membership.objects.filter(pk=member["id"]).exists()


def test_annotators_and_reviewers_cannot_see_rates(api_client) -> None:
    project, _, (annotator,) = project_with_members()
    reviewer = MembershipFactory(project=project, role="reviewer").user
    member_id = Membership.objects.get(project=project, user=annotator).pk
    url = f"/api/v1/projects/{project.pk}/members/"
    for user in (annotator, reviewer):
        api_client.force_authenticate(user)
        for response in (
            api_client.get(url),
            api_client.post(url, {"username": UserFactory().username}, format="json"),
            api_client.patch(f"{url}{member_id}/", {"hourly_rate": "999"}, format="json"),
            api_client.delete(f"{url}{member_id}/"),
        ):
            assert response.status_code == 403
            assert response.json()["code"] == "role_required"
            assert "hourly_rate" not in response.content.decode()


def test_project_keeps_a_manager(api_client) -> None:
    project, manager, _ = project_with_members()
    own = Membership.objects.get(project=project, user=manager)
    api_client.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/members/{own.pk}/"
    response = api_client.patch(url, {"role": "annotator"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "last_manager"
    response = api_client.delete(url)
    assert response.status_code == 409
    assert response.json()["code"] == "last_manager"
    # with a second manager the first may step down
    MembershipFactory(project=project, role="manager")
    assert api_client.patch(url, {"role": "annotator"}, format="json").status_code == 200


# --- tokens ---------------------------------------------------------------------------


def test_token_login_use_and_revoke(api_client) -> None:
    project, manager, _ = project_with_members()
    manager.set_password("s3cret-pass-word")
    manager.save()
    response = api_client.post(
        "/api/v1/auth/token/", {"username": manager.username, "password": "s3cret-pass-word"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get(f"/api/v1/projects/{project.pk}/").status_code == 200
    assert api_client.delete("/api/v1/auth/token/").status_code == 204
    response = api_client.get(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_token_wrong_password(api_client) -> None:
    user = UserFactory()
    response = api_client.post("/api/v1/auth/token/", {"username": user.username, "password": "nope"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"


def test_token_revoke_needs_authentication(api_client) -> None:
    assert api_client.delete("/api/v1/auth/token/").status_code in (401, 403)


def test_login_is_throttled(api_client, settings) -> None:  # type: ignore[no-untyped-def]
    # The per-address rate limit alone; the failure lockout has its own tests (tests/security).
    settings.LOGIN_MAX_FAILURES = settings.LOGIN_MAX_FAILURES_PER_IP = 100
    user = UserFactory()
    codes = [
        api_client.post("/api/v1/auth/token/", {"username": user.username, "password": "bad"}, format="json")
        for _ in range(11)
    ]
    assert [r.status_code for r in codes[:10]] == [400] * 10
    assert codes[10].status_code == 429
    assert codes[10].json()["code"] == "throttled"
    # the right password is throttled too, until the window passes
    response = api_client.post(
        "/api/v1/auth/token/", {"username": user.username, "password": "pw-for-tests-123"}, format="json"
    )
    assert response.status_code == 429
