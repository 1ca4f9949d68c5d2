"""Private media views: members only, 404 for everyone else, safe headers, bytes as stored."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling.models import Item
from labeling.services.items import items_import_files
from tests.conftest import png_bytes
from tests.factories import UserFactory, project_with_members
from tests.labeling.test_import_helpers import jpeg_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def imported():  # type: ignore[no-untyped-def]
    project, manager, (annotator,) = project_with_members(n_annotators=1)
    content = jpeg_bytes()
    items_import_files(project=project, files=[upload('we"ird näme\r\n.JPEG', content)])
    return Item.objects.get(project=project), content, manager, annotator


def body(response) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(response.streaming_content)


def test_member_gets_the_image_with_safe_headers(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, content, _, annotator = imported
    client.force_login(annotator)  # any member, annotators included
    response = client.get(reverse("item-image", kwargs={"item_id": item.pk}))
    assert response.status_code == 200
    assert body(response) == content
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, max-age=3600"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("inline;") and 'filename="we_ird_name.jpg"' in disposition


def test_member_gets_the_webp_thumbnail(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, _, manager, _ = imported
    client.force_login(manager)
    response = client.get(reverse("item-thumbnail", kwargs={"item_id": item.pk}))
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert body(response)[8:12] == b"WEBP"


def test_token_auth_for_api_clients(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, content, manager, _ = imported
    token = Token.objects.create(user=manager)
    url = reverse("item-image", kwargs={"item_id": item.pk})
    assert body(client.get(url, headers={"Authorization": f"Token {token.key}"})) == content
    assert client.get(url, headers={"Authorization": "Token wrong"}).status_code == 404


def test_non_member_and_unknown_item_get_404(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, *_ = imported
    client.force_login(UserFactory())
    assert client.get(reverse("item-image", kwargs={"item_id": item.pk})).status_code == 404
    assert client.get(reverse("item-thumbnail", kwargs={"item_id": item.pk})).status_code == 404
    client.force_login(imported[2])
    assert client.get(reverse("item-image", kwargs={"item_id": item.pk + 1000})).status_code == 404


def test_member_of_another_project_gets_404(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, *_ = imported
    _, other_manager, _ = project_with_members()
    client.force_login(other_manager)
    assert client.get(reverse("item-image", kwargs={"item_id": item.pk})).status_code == 404


def test_anonymous_is_denied(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, *_ = imported
    url = reverse("item-image", kwargs={"item_id": item.pk})
    assert client.get(url, headers={"Accept": "image/webp,*/*"}).status_code == 404
    page = client.get(url, headers={"Accept": "text/html"})
    assert page.status_code in {302, 404}  # browsers go to the login page when there is one
    if page.status_code == 302:
        assert "next=" in page["Location"]


def test_only_safe_methods(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, _, manager, _ = imported
    client.force_login(manager)
    assert client.post(reverse("item-image", kwargs={"item_id": item.pk})).status_code == 405
    assert client.head(reverse("item-image", kwargs={"item_id": item.pk})).status_code == 200


def test_png_content_type(client: Client) -> None:
    project, manager, _ = project_with_members()
    items_import_files(project=project, files=[upload("x.jpg", png_bytes())])  # the name lies; the format wins
    client.force_login(manager)
    item = Item.objects.get(project=project)
    assert client.get(reverse("item-image", kwargs={"item_id": item.pk}))["Content-Type"] == "image/png"


def test_no_public_media_route(client: Client, imported) -> None:  # type: ignore[no-untyped-def]
    item, _, manager, _ = imported
    client.force_login(manager)
    assert client.get(f"/media/{item.file.name}").status_code == 404
    assert client.get(f"/media-not-served/{item.file.name}").status_code == 404
