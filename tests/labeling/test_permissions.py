"""Access rules across the API.

- A non-member gets 404 for a project and everything in it (existence is not revealed),
  even when they manage another project.
- An id from another project, put in my project's URL, is "not found".
- An annotator cannot change a project, its classes or members, see rates, or export
  other people's work: 403 with ``code: role_required``.
"""

from __future__ import annotations

import re

import pytest

from labeling.models import LabelClass, Membership
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members
from tests.routes import routes_under

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def two_projects():  # type: ignore[no-untyped-def]
    mine, manager, (annotator,) = project_with_members()
    theirs, their_manager, (their_annotator,) = project_with_members()
    return {
        "mine": mine,
        "manager": manager,
        "annotator": annotator,
        "theirs": theirs,
        "their_manager": their_manager,
        "their_item": ItemFactory(project=theirs),
        "their_class": theirs.classes.first(),
        "their_membership": Membership.objects.get(project=theirs, user=their_annotator),
    }


def _fill(route: str, project_id: int, other_id: int) -> str:
    url = route.replace("<int:project_id>", str(project_id))
    return "/" + re.sub(r"<int:\w+>", str(other_id), url)


@pytest.mark.parametrize(("route", "method"), routes_under("api/v1/projects/<int:project_id>/"))
def test_outsider_gets_404_everywhere_in_a_project(api_client, two_projects, route, method) -> None:  # type: ignore[no-untyped-def]
    """Every route under /projects/{id}/, every method: the manager of another project gets 404."""
    api_client.force_authenticate(two_projects["their_manager"])
    project = two_projects["mine"]
    item = ItemFactory(project=project)
    url = _fill(route, project.pk, item.pk)
    response = getattr(api_client, method)(url, {}, format="json")
    assert response.status_code == 404, (url, method, response.status_code)
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("patch", "classes/{class}/", {"name": "mine now"}),
        ("delete", "classes/{class}/", None),
        ("patch", "members/{membership}/", {"hourly_rate": "1000"}),
        ("delete", "members/{membership}/", None),
    ],
)
def test_ids_from_another_project_are_not_found(api_client, two_projects, method, suffix, body) -> None:  # type: ignore[no-untyped-def]
    """My project in the URL, their class or membership id: 404, and nothing changes."""
    api_client.force_authenticate(two_projects["manager"])
    url = f"/api/v1/projects/{two_projects['mine'].pk}/" + suffix.format(
        **{"class": two_projects["their_class"].pk, "membership": two_projects["their_membership"].pk}
    )
    response = getattr(api_client, method)(url, body, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    their_class = LabelClass.objects.get(pk=two_projects["their_class"].pk)
    assert their_class.name == two_projects["their_class"].name
    assert Membership.objects.get(pk=two_projects["their_membership"].pk).hourly_rate == 0


def test_lists_never_leak_other_projects(api_client, two_projects) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(two_projects["manager"])
    mine = two_projects["mine"]
    projects = api_client.get("/api/v1/projects/").json()["results"]
    assert [p["id"] for p in projects] == [mine.pk]
    classes = api_client.get(f"/api/v1/projects/{mine.pk}/classes/").json()["results"]
    assert {c["id"] for c in classes} == set(mine.classes.values_list("id", flat=True))
    members = api_client.get(f"/api/v1/projects/{mine.pk}/members/").json()["results"]
    assert {m["id"] for m in members} == set(Membership.objects.filter(project=mine).values_list("id", flat=True))


def _manager_calls(project_id: int, class_id: int, membership_id: int) -> list[tuple[str, str, dict | None]]:
    base = f"/api/v1/projects/{project_id}/"
    return [
        ("patch", base, {"name": "x"}),
        ("delete", base, None),
        ("post", f"{base}classes/", {"name": "fish"}),
        ("patch", f"{base}classes/{class_id}/", {"name": "kitty"}),
        ("delete", f"{base}classes/{class_id}/", None),
        ("get", f"{base}members/", None),
        ("post", f"{base}members/", {"username": "someone"}),
        ("patch", f"{base}members/{membership_id}/", {"role": "manager"}),
        ("delete", f"{base}members/{membership_id}/", None),
        ("get", f"{base}export/?format=csv", None),
        ("get", f"{base}export/?format=json", None),
    ]


def test_annotator_gets_role_required_on_manager_endpoints(api_client, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, annotator = two_projects["mine"], two_projects["annotator"]
    own = Membership.objects.get(project=mine, user=annotator)
    UserFactory(username="someone")
    api_client.force_authenticate(annotator)
    for method, url, body in _manager_calls(mine.pk, mine.classes.first().pk, own.pk):
        response = getattr(api_client, method)(url, body, format="json")
        assert response.status_code == 403, (method, url, response.status_code)
        assert response.json()["code"] == "role_required", (method, url)
    # and nothing changed: not even promoting themselves
    assert Membership.objects.get(pk=own.pk).role == Membership.Role.ANNOTATOR
    assert mine.classes.count() == 3


def test_reviewer_reads_and_exports_but_does_not_manage(api_client, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine = two_projects["mine"]
    reviewer = MembershipFactory(project=mine, role=Membership.Role.REVIEWER).user
    api_client.force_authenticate(reviewer)
    assert api_client.get(f"/api/v1/projects/{mine.pk}/").status_code == 200
    assert api_client.get(f"/api/v1/projects/{mine.pk}/export/?format=jsonl").status_code == 200
    assert api_client.get(f"/api/v1/projects/{mine.pk}/members/").status_code == 403
    assert api_client.patch(f"/api/v1/projects/{mine.pk}/", {"name": "x"}, format="json").status_code == 403


def test_anonymous_gets_401(api_client, two_projects) -> None:  # type: ignore[no-untyped-def]
    for url in ("/api/v1/projects/", f"/api/v1/projects/{two_projects['mine'].pk}/"):
        response = api_client.get(url)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
