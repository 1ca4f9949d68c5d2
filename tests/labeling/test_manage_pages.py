"""The manager pages: /projects/new/ (create a project) and /projects/<id>/manage/ (import, export)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from labeling.models import ImportJob, LabelClass, Membership, Project
from labeling.views.manage import parse_class_lines
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory, project_with_members

pytestmark = pytest.mark.django_db


def _login(client: Client, user) -> Client:  # type: ignore[no-untyped-def]
    client.force_login(user)
    return client


# --- parsing the class lines ------------------------------------------------------------------
def test_parse_class_lines_shortcuts_and_free_digits() -> None:
    classes = parse_class_lines("cat, 1\n\n  dog  \nbird,b\nfish, \nno, comma here\n")
    assert classes == [
        {"name": "cat", "shortcut": "1"},
        {"name": "dog", "shortcut": "2"},  # the next free digit
        {"name": "bird", "shortcut": "b"},
        {"name": "fish", "shortcut": "3"},  # a trailing comma: no key given
        {"name": "no, comma here", "shortcut": "4"},  # the tail is not one character: part of the name
    ]


def test_parse_class_lines_runs_out_of_digits_and_rejects_blank_names() -> None:
    classes = parse_class_lines("\n".join(f"c{i}" for i in range(11)))
    assert [c["shortcut"] for c in classes] == [*"123456789", "", ""]
    with pytest.raises(ValidationError):
        parse_class_lines("cat\n, 2\n")


# --- /projects/new/ -----------------------------------------------------------------------------
def test_new_project_needs_sign_in(client: Client) -> None:
    res = client.get(reverse("project-new"))
    assert res.status_code == 302 and res["Location"].startswith(reverse("login"))


def test_new_project_form_creates_project_and_redirects_to_manage(client: Client) -> None:
    user = UserFactory()
    _login(client, user)
    assert client.get(reverse("project-new")).status_code == 200
    res = client.post(
        reverse("project-new"),
        {
            "name": "Chest X-rays",
            "instructions": "Look for nodules.",
            "classes": "normal, n\nnodule\nother",
            "overlap": "3",
            "eval_fraction": "0.2",
        },
    )
    project = Project.objects.get(name="Chest X-rays")
    assert res.status_code == 302 and res["Location"] == reverse("project-manage", args=[project.pk])
    assert (project.overlap, project.max_overlap, project.eval_fraction) == (3, 3, 0.2)
    assert project.instructions == "Look for nodules."
    assert list(LabelClass.objects.filter(project=project).values_list("name", "shortcut")) == [
        ("normal", "n"),
        ("nodule", "1"),
        ("other", "2"),
    ]
    assert Membership.objects.get(project=project, user=user).role == Membership.Role.MANAGER


@pytest.mark.parametrize(
    "changes,field_error",
    [
        ({"classes": "only-one"}, "at least 2 classes"),
        ({"classes": "cat, 1\ncat, 2"}, "must be unique"),
        ({"classes": "cat, 1\ndog, 1"}, "shortcuts must be unique"),
        ({"eval_fraction": "1.5"}, "less than or equal to 0.99"),
        ({"overlap": "0"}, "greater than or equal to 1"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_new_project_form_shows_errors_and_creates_nothing(client: Client, changes, field_error) -> None:  # type: ignore[no-untyped-def]
    _login(client, UserFactory())
    data = {"name": "P", "classes": "cat\ndog", "overlap": "1", "eval_fraction": "0.1", **changes}
    res = client.post(reverse("project-new"), data)
    assert res.status_code == 400
    assert field_error.lower() in res.content.decode().lower()
    assert not Project.objects.exists()


def test_new_project_escapes_what_the_user_typed(client: Client) -> None:
    _login(client, UserFactory())
    res = client.post(
        reverse("project-new"),
        {"name": "<script>alert(1)</script>", "classes": "<b>x</b>", "overlap": "1", "eval_fraction": "0"},
    )
    html = res.content.decode()
    assert res.status_code == 400  # one class only
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_new_project_refused_to_non_staff_when_the_setting_says_so(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PROJECT_CREATE_REQUIRES_STAFF = True
    _login(client, UserFactory())
    assert client.get(reverse("project-new")).status_code == 403
    assert client.post(reverse("project-new"), {"name": "x", "classes": "a\nb"}).status_code == 403
    assert not Project.objects.exists()
    _login(client, UserFactory(username="staffer", is_staff=True))
    assert client.get(reverse("project-new")).status_code == 200


# --- /projects/<id>/manage/ ----------------------------------------------------------------------
def test_manage_page_shows_counts_classes_jobs_and_links(client: Client) -> None:
    project, manager, _ = project_with_members()
    ItemFactory.create_batch(3, project=project)
    ImportJob.objects.create(
        project=project,
        source="zip: scans.zip",
        status="succeeded",
        total=9,
        processed=9,
        report={"imported": 9, "duplicates": [], "rejected": []},
    )
    html = _login(client, manager).get(reverse("project-manage", args=[project.pk])).content.decode()
    assert 'id="items-total">3<' in html
    assert 'id="items-status-open">3<' in html
    for name in ("cat", "dog", "bird"):
        assert name in html
    assert "zip: scans.zip" in html and "9 / 9" in html
    export = reverse("api-project-export", args=[project.pk])
    for fmt in ("json", "jsonl", "csv"):
        assert f'href="{export}?format={fmt}"' in html
    assert reverse("dashboard", args=[project.pk]) in html and reverse("workspace", args=[project.pk]) in html
    assert reverse("item-collection", args=[project.pk]) in html  # in the page's JSON config
    assert "labeling/manage.js" in html and "csrfmiddlewaretoken" in html


def test_manage_page_escapes_user_content(client: Client) -> None:
    project = ProjectFactory(name="<img src=x onerror=alert(1)>", classes=["<i>a</i>", "b"])
    manager = MembershipFactory(project=project, role=Membership.Role.MANAGER).user
    ImportJob.objects.create(project=project, source="zip: <script>x</script>.zip")
    html = _login(client, manager).get(reverse("project-manage", args=[project.pk])).content.decode()
    assert "<img src=x" not in html and "<i>a</i>" not in html and "<script>x</script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_manage_page_access(client: Client) -> None:
    project, manager, (annotator,) = project_with_members()
    reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    url = reverse("project-manage", args=[project.pk])
    assert client.get(url).status_code == 302  # signed out: to the login page
    assert _login(client, annotator).get(url).status_code == 403
    assert _login(client, reviewer).get(url).status_code == 403
    assert _login(client, UserFactory()).get(url).status_code == 404  # non-member: existence not revealed
    assert _login(client, manager).get(reverse("project-manage", args=[project.pk + 999])).status_code == 404
    assert _login(client, manager).get(url).status_code == 200


def test_home_links_new_project_and_manage_for_managers_only(client: Client) -> None:
    project, manager, (annotator,) = project_with_members()
    manage_url = reverse("project-manage", args=[project.pk])
    html = _login(client, manager).get(reverse("home")).content.decode()
    assert reverse("project-new") in html and manage_url in html
    html = _login(client, annotator).get(reverse("home")).content.decode()
    assert reverse("project-new") in html and manage_url not in html
