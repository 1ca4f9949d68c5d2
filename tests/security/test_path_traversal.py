"""Attack: path traversal through file and media URLs, download names and import names.

Defences: media routes take an integer item id only and serve the path stored on the item
(labeling/views/media.py); download names are rebuilt from a cleaned stem
(``safe_download_name``); the export file name is slugified; zip and server-path names
are refused or confined (labeling/services/imports.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from labeling.models import Item
from labeling.services.items import items_import_files, items_import_zip
from tests.conftest import png_bytes
from tests.labeling.test_import_helpers import make_zip, upload
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db

TRAVERSALS = [
    "/files/items/../../../etc/passwd",
    "/files/items/%2e%2e/%2e%2e/etc/passwd",
    "/files/items/..%2f..%2fetc%2fpasswd/image",
    "/files/items/1/image/../../../../etc/passwd",
    "/files/items/1%2f..%2f..%2fsettings.py/image",
    "/files/items/-1/image",
    "/files/items/1.0/image",
    "/files/items/%00/image",
    "/files/projects/1/items/x/../../../annotate/settings.py",
    "/media/../annotate/settings.py",
    "/media-not-served/projects/1/items/aa/a.png",
    "/static/../annotate/settings.py",
    "/static/%2e%2e/annotate/settings.py",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_in_media_urls_is_404(client: Client, world: World, url: str) -> None:
    client.force_login(world.manager)
    response = client.get(url)
    assert response.status_code == 404
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"root:" not in content and b"SECRET_KEY" not in content


def test_path_traversal_in_a_stored_name_does_not_reach_the_download_name(client: Client, world: World) -> None:
    items_import_files(project=world.mine, files=[upload('../../..\\..\\etc/pass"wd\r\n.png', png_bytes())])
    item = Item.objects.get(project=world.mine, original_name__contains="pass")
    client.force_login(world.annotator)
    response = client.get(f"/files/items/{item.pk}/image")
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert "/" not in disposition and "\\" not in disposition and ".." not in disposition
    assert "\r" not in disposition and "\n" not in disposition
    # The file on disk is named by its content hash, never by the uploaded name.
    assert item.file.name.startswith(f"projects/{world.mine.pk}/items/") and ".." not in item.file.name


def test_path_traversal_in_zip_entry_names_is_refused(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    names = ["../evil.png", "a/../../evil2.png", "..\\..\\evil3.png", "/etc/evil4.png", "C:\\evil5.png", "C:evil6.png"]
    data = make_zip([(name, png_bytes(color=(i, 1, 2))) for i, name in enumerate(names)])
    import io

    report = items_import_zip(project=world.mine, fileobj=io.BytesIO(data))
    assert report.imported == 0
    assert sorted(r["code"] for r in report.rejected) == ["unsafe_path"] * len(names)
    media = Path(settings.MEDIA_ROOT)
    assert not list(media.parent.rglob("evil*")), "nothing may be written under the entry's name"


def test_path_traversal_in_server_references_is_refused(world: World, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "import-root"
    root.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (root / "link.png").symlink_to(secret)
    settings.IMPORT_ROOTS = [str(root)]
    response = api_as(world.manager).post(
        f"/api/v1/projects/{world.mine.pk}/items/",
        {"references": [{"path": f"{root}/../secret.png"}, {"path": f"{root}/link.png"}, {"path": "secret.png"}]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["imported"] == 0
    assert [r["code"] for r in response.json()["rejected"]] == ["path_not_allowed"] * 3


def test_path_traversal_in_the_export_file_name(world: World) -> None:
    world.mine.name = '../../x"; filename=evil.sh\r\nSet-Cookie: a=b'
    world.mine.save(update_fields=["name"])
    response = api_as(world.manager).get(f"/api/v1/projects/{world.mine.pk}/export/?format=csv")
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="annotate-{world.mine.pk}-')
    assert disposition.count('"') == 2 and "/" not in disposition and ".." not in disposition
    assert "\r" not in disposition and "\n" not in disposition and "evil.sh" not in disposition.split('"')[2]
