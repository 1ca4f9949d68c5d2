"""The browser pages: sign-in, "My projects" and the labeling workspace (views only, no API)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Annotation, Item, LabelClass, Lease, Membership
from labeling.views.workspace import workspace_keys
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def _config(html: str) -> dict:
    match = re.search(r'<script id="ws-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "config json_script missing"
    return json.loads(match.group(1))


@pytest.fixture
def member(client: Client):  # type: ignore[no-untyped-def]
    membership = MembershipFactory(role=Membership.Role.ANNOTATOR)
    client.force_login(membership.user)
    return membership


# --- auth -------------------------------------------------------------------------------------
def test_login_page_renders_and_signs_in(client: Client) -> None:
    user = UserFactory(username="ann")
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content and b"csrfmiddlewaretoken" in page.content
    res = client.post(reverse("login"), {"username": "ann", "password": "pw-for-tests-123"})
    assert res.status_code == 302 and res["Location"] == reverse("home")
    assert client.get(reverse("home")).wsgi_request.user == user


def test_logout_is_post_only(client: Client, member: Membership) -> None:
    assert client.get(reverse("logout")).status_code == 405
    res = client.post(reverse("logout"))
    assert res.status_code == 302
    assert client.get(reverse("home")).status_code == 302  # signed out: back to login


@pytest.mark.parametrize("name,kwargs", [("home", {}), ("workspace", {"project_id": 1})])
def test_anonymous_is_sent_to_login(client: Client, name: str, kwargs: dict) -> None:
    url = reverse(name, kwargs=kwargs)
    res = client.get(url)
    assert res.status_code == 302
    assert res["Location"].startswith(reverse("login")) and "next=" in res["Location"]


# --- home -------------------------------------------------------------------------------------
def test_home_lists_only_my_projects_with_counts(
    client: Client, member: Membership, django_assert_max_num_queries
) -> None:  # type: ignore[no-untyped-def]
    project = member.project
    items = [ItemFactory(project=project) for _ in range(3)]
    Item.objects.filter(pk=items[0].pk).update(status=Item.Status.DONE)
    lease = Lease.objects.create(item=items[0], annotator=member.user, project=project, expires_at="2100-01-01T00:00Z")
    label = LabelClass.objects.filter(project=project).first()
    Annotation.objects.create(
        item=items[0], annotator=member.user, lease=lease, label=label, started_at="2024-01-01T00:00Z"
    )
    second = MembershipFactory(user=member.user, role=Membership.Role.MANAGER).project
    ItemFactory(project=second)
    other = ProjectFactory(name="Someone else's project")
    ItemFactory(project=other)

    with django_assert_max_num_queries(4):  # session, user, one aggregated membership query
        res = client.get(reverse("home"))
    assert res.status_code == 200
    html = res.content.decode()
    assert project.name in html and second.name in html
    assert "Someone else" not in html
    assert reverse("workspace", args=[project.pk]) in html
    assert reverse("workspace", args=[other.pk]) not in html
    rows = {row["project"].pk: row["membership"] for row in res.context["rows"]}
    assert (rows[project.pk].items_done, rows[project.pk].items_total, rows[project.pk].my_annotations) == (1, 3, 1)
    assert (rows[second.pk].items_done, rows[second.pk].items_total, rows[second.pk].my_annotations) == (0, 1, 0)
    assert "/api/v1/docs/" in html
    assert reverse("admin:index") not in html  # not staff


def test_home_escapes_project_names_and_links_admin_for_staff(client: Client) -> None:
    user = UserFactory(is_staff=True)
    MembershipFactory(user=user, project=ProjectFactory(name=XSS))
    client.force_login(user)
    html = client.get(reverse("home")).content.decode()
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert reverse("admin:index") in html


# --- workspace --------------------------------------------------------------------------------
def test_workspace_renders_classes_keys_and_config(client: Client, member: Membership) -> None:
    project = member.project
    res = client.get(reverse("workspace", args=[project.pk]))
    assert res.status_code == 200
    html = res.content.decode()
    for cls in project.classes.all():
        assert f'data-class-id="{cls.pk}"' in html
        assert f"<kbd>{cls.shortcut}</kbd>" in html
    config = _config(html)
    assert config["projectId"] == project.pk
    assert [c["name"] for c in config["classes"]] == ["cat", "dog", "bird"]  # LabelClass order
    assert [c["shortcut"] for c in config["classes"]] == ["1", "2", "3"]
    assert config["keys"]["skip"] == "s" and config["keys"]["undo"] == "u"
    assert 'data-idle-seconds="30"' in html
    assert "labeling/workspace.js" in html and 'type="module"' in html
    assert "csrftoken" in res.cookies  # the script sends it back as X-CSRFToken


def test_workspace_escapes_user_content(client: Client) -> None:
    project = ProjectFactory(name=XSS, instructions=f"Look closely.\n{XSS}", classes=[XSS, "ok"])
    LabelClass.objects.filter(project=project, name="ok").update(color="red;a:b")  # not #rrggbb
    user = MembershipFactory(project=project).user
    client.force_login(user)
    html = client.get(reverse("workspace", args=[project.pk])).content.decode()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # title, heading, instructions, button
    config = _config(html)  # json_script escapes < > & inside the JSON
    assert config["classes"][0]["name"] == XSS
    assert "red;a:b" not in html and config["classes"][1]["color"] == "#4e79a7"


def test_workspace_is_404_for_non_members(client: Client, member: Membership) -> None:
    other = ProjectFactory()
    assert client.get(reverse("workspace", args=[other.pk])).status_code == 404
    assert client.get(reverse("workspace", args=[999_999])).status_code == 404


def test_workspace_open_to_every_labeling_role(client: Client) -> None:
    project = ProjectFactory()
    for role in Membership.Role.values:
        user = MembershipFactory(project=project, role=role).user
        client.force_login(user)
        assert client.get(reverse("workspace", args=[project.pk])).status_code == 200, role


def test_class_shortcuts_win_over_builtin_keys() -> None:
    keys = workspace_keys(["0", "1", "S", "+", ""])
    assert "skip" not in keys and "reset_view" not in keys and "zoom_in" not in keys
    assert keys["undo"] == "u" and keys["accept"] == "a"
