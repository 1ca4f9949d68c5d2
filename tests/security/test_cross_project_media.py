"""Attack: fetching the image or thumbnail of another project by guessing its item id → 404.

Defence: labeling/views/media.py checks membership of the item's project
(``item_access``) and answers 404 (not 403) so ids do not reveal what exists.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from labeling.models import Item
from labeling.services.items import items_import_files
from tests.conftest import png_bytes
from tests.labeling.test_import_helpers import upload
from tests.security.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def their_imported(world: World) -> Item:
    items_import_files(project=world.theirs, files=[upload("secret-scan.png", png_bytes(color=(9, 9, 9)))])
    return Item.objects.get(project=world.theirs, original_name="secret-scan.png")


@pytest.mark.parametrize("kind", ["image", "thumbnail"])
def test_image_and_thumbnail_of_another_project_are_404(
    client: Client, world: World, their_imported: Item, kind: str
) -> None:
    assert their_imported.thumbnail  # the thumbnail route really has a file to leak
    url = f"/files/items/{their_imported.pk}/{kind}"
    client.force_login(world.manager)  # a manager, of another project
    assert client.get(url).status_code == 404
    assert client.get(url, HTTP_ACCEPT="text/html").status_code == 404
    # The same with an API token instead of a session.
    token = Token.objects.create(user=world.annotator)
    assert Client().get(url, HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 404
    # Its own members do get it: the 404 above is the access rule, not a broken route.
    client.force_login(world.their_manager)
    assert client.get(url).status_code == 200


def test_item_api_of_another_project_is_404(client: Client, world: World, their_imported: Item) -> None:
    client.force_login(world.manager)
    # Their item under my project id, and under theirs.
    assert client.get(f"/api/v1/projects/{world.mine.pk}/items/{their_imported.pk}/").status_code == 404
    assert client.get(f"/api/v1/projects/{world.theirs.pk}/items/{their_imported.pk}/").status_code == 404
