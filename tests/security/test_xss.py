"""Attack: stored XSS through text that users type and pages show.

Payloads go into the project name, its instructions, class names, a class color, a user
name, an imported file's name and metadata, and an import job's source and error; then
every page that shows them (home, labeling workspace, manage page, dashboard, sign-in)
is rendered and the payload may appear only escaped: in HTML through Django's
autoescaping, in the JSON the pages embed through ``json_script`` (``<`` as ``\\u003C``).
The API answers JSON (``application/json``, ``nosniff``), which a browser does not render.
"""

from __future__ import annotations

import pytest
from django.test import Client

from labeling.models import ImportJob, LabelClass, Membership
from labeling.services.items import items_import_files
from tests.conftest import png_bytes
from tests.factories import MembershipFactory, UserFactory
from tests.labeling.test_import_helpers import upload
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('xss')</script>"
ATTR = '"><img src=x onerror=alert(1)>'
PAYLOAD = f"{SCRIPT}{ATTR}</script><!--"
RAW_MARKERS = ["<script>alert", "<img src=x", "onerror=alert(1)>", "</script><!--"]


@pytest.fixture
def poisoned(world: World) -> World:
    project = world.mine
    project.name = f"P {PAYLOAD}"
    project.instructions = f"Read me {PAYLOAD}"
    project.save(update_fields=["name", "instructions"])
    LabelClass.objects.create(project=project, name=f"C {PAYLOAD}", shortcut="9", order=9, color='red;}"x')
    evil_user = UserFactory(username="u<script>x</script>")
    MembershipFactory(project=project, user=evil_user, role=Membership.Role.ANNOTATOR)
    items_import_files(project=project, files=[upload(f"{PAYLOAD}.png", png_bytes(color=(3, 4, 5)))])
    item = project.items.get(original_name__startswith="script>")  # the upload kept the part after the last "/"
    item.original_name = f"{PAYLOAD}.png"  # as a zip entry name would keep it whole
    item.metadata = {"note": PAYLOAD, PAYLOAD: 1}
    item.save(update_fields=["original_name", "metadata"])
    ImportJob.objects.create(
        project=project, source=f"zip: {PAYLOAD}.zip", status=ImportJob.Status.FAILED, error=f"bad {PAYLOAD}"
    )
    return world


def _assert_escaped(html: str, where: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in html, f"{where}: raw {marker!r} in the page"


PAGES = ["/", "/projects/{pid}/label/", "/projects/{pid}/manage/", "/projects/{pid}/dashboard/"]


@pytest.mark.parametrize("page", PAGES)
def test_xss_payloads_appear_only_escaped_in_pages(client: Client, poisoned: World, page: str) -> None:
    client.force_login(poisoned.manager)
    response = client.get(page.format(pid=poisoned.mine.pk))
    assert response.status_code == 200
    html = response.content.decode()
    _assert_escaped(html, page)
    # The project name is on every one of these pages: escaped, so it was really rendered.
    assert "P &lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in html or "\\u003Cscript\\u003E" in html


def test_xss_in_the_workspace_json_config_and_class_color(client: Client, poisoned: World) -> None:
    client.force_login(poisoned.annotator)
    html = client.get(f"/projects/{poisoned.mine.pk}/label/").content.decode()
    _assert_escaped(html, "workspace")
    assert '<script id="ws-config" type="application/json">' in html
    assert "C \\u003Cscript\\u003Ealert" in html  # the class name inside the JSON config
    assert "C &lt;script&gt;alert" in html  # and in the buttons
    assert "red;}" not in html  # a color that is not #rrggbb never reaches a style attribute


def test_xss_reflected_in_the_sign_in_page(client: Client) -> None:
    response = client.get("/accounts/login/", {"next": f"/{ATTR}"})
    _assert_escaped(response.content.decode(), "login next")
    response = client.post("/accounts/login/", {"username": PAYLOAD, "password": "x"})
    _assert_escaped(response.content.decode(), "login username")


def test_xss_api_answers_are_json_not_html(poisoned: World) -> None:
    response = api_as(poisoned.manager).get(f"/api/v1/projects/{poisoned.mine.pk}/items/")
    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_xss_pages_carry_a_content_security_policy(client: Client, poisoned: World) -> None:
    client.force_login(poisoned.manager)
    csp = client.get(f"/projects/{poisoned.mine.pk}/label/")["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # The media views keep their stricter policy.
    item = poisoned.mine.items.first()
    media = client.get(f"/files/items/{item.pk}/image")
    assert media["Content-Security-Policy"] == "default-src 'none'; sandbox"
