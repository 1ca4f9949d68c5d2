"""Attack: an annotator (or reviewer) calling manager-only API routes and pages.

Defence: every view checks the caller's role with ``project_access(..., roles=...)``
(labeling/selectors/access.py): 403 ``role_required`` for members without the role, 404
for non-members. The route list is read from the URL resolver, so a route added later
without a role check fails here unless it is added to ANNOTATOR_MAY on purpose.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from labeling.models import ImportJob, Membership
from tests.factories import MembershipFactory
from tests.routes import routes_under
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db

# What an annotator may call in a project it belongs to: read the project and its classes,
# label from the queue, see its own annotations. Everything else is for managers (or reviewers).
ANNOTATOR_MAY = {
    ("api/v1/projects/<int:project_id>/", "get"),
    ("api/v1/projects/<int:project_id>/classes/", "get"),
    ("api/v1/projects/<int:project_id>/next/", "get"),
    ("api/v1/projects/<int:project_id>/annotations/", "get"),
    # By design (labeling/api/ml.py): members read ML job progress and the model versions.
    ("api/v1/projects/<int:project_id>/jobs/", "get"),
    ("api/v1/projects/<int:project_id>/models/", "get"),
}
MANAGER_PAGES = ["/projects/{pid}/manage/", "/projects/{pid}/dashboard/"]


def _url(route: str, world: World, job_id: int) -> str:
    url = route.replace("<int:project_id>", str(world.mine.pk)).replace("<int:item_id>", str(world.my_item.pk))
    url = url.replace("<int:job_id>", str(job_id))
    return "/" + re.sub(r"<int:\w+>", "1", url)


PROJECT_ROUTES = [r for r in routes_under("api/v1/projects/<int:project_id>/") if r not in ANNOTATOR_MAY]


def test_the_route_list_is_not_empty() -> None:
    assert len(PROJECT_ROUTES) >= 20  # train, embed, export, members, dashboard, review, items...


@pytest.mark.parametrize(("route", "method"), PROJECT_ROUTES)
def test_annotator_cannot_call_manager_api_routes(world: World, route: str, method: str) -> None:
    job = ImportJob.objects.create(project=world.mine, source="x")
    response = getattr(api_as(world.annotator), method)(_url(route, world, job.pk), {}, format="json")
    assert response.status_code in (403, 404), (route, method, response.status_code)
    if response.status_code == 403:
        assert response.json()["code"] == "role_required"


def test_annotator_cannot_read_import_jobs(world: World) -> None:
    job = ImportJob.objects.create(project=world.mine, source="x")
    assert api_as(world.annotator).get(f"/api/v1/import-jobs/{job.pk}/").status_code in (403, 404)
    assert api_as(world.manager).get(f"/api/v1/import-jobs/{job.pk}/").status_code == 200


def test_annotator_cannot_make_itself_manager(world: World) -> None:
    membership = Membership.objects.get(project=world.mine, user=world.annotator)
    response = api_as(world.annotator).patch(
        f"/api/v1/projects/{world.mine.pk}/members/{membership.pk}/", {"role": "manager"}, format="json"
    )
    assert response.status_code == 403
    membership.refresh_from_db()
    assert membership.role == Membership.Role.ANNOTATOR


@pytest.mark.parametrize("page", MANAGER_PAGES)
def test_annotator_cannot_open_manager_pages(client: Client, world: World, page: str) -> None:
    client.force_login(world.annotator)
    assert client.get(page.format(pid=world.mine.pk)).status_code == 403
    reviewer = MembershipFactory(project=world.mine, role=Membership.Role.REVIEWER).user
    client.force_login(reviewer)
    assert client.get(page.format(pid=world.mine.pk)).status_code == 403
    client.force_login(world.manager)
    assert client.get(page.format(pid=world.mine.pk)).status_code == 200


def test_non_staff_cannot_open_the_admin(client: Client, world: World) -> None:
    client.force_login(world.manager)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
