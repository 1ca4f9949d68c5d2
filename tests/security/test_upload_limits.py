"""Attack: decompression bombs, zip bombs and oversized uploads or request bodies.

Defences: Pillow's header is checked against IMPORT_MAX_PIXELS before decoding (and
DecompressionBombWarning is an error); each file is read with the IMPORT_MAX_FILE_BYTES
cap whatever its header says; a zip's declared total is checked against
IMPORT_MAX_ZIP_BYTES and its entry count against IMPORT_MAX_ZIP_ENTRIES before anything is
read; Django's DATA_UPLOAD_MAX_MEMORY_SIZE / DATA_UPLOAD_MAX_NUMBER_FILES bound the request.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from labeling.models import Item
from tests.conftest import png_bytes
from tests.labeling.test_import_helpers import make_zip, png_claiming_size, upload
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db


def _url(world: World) -> str:
    return f"/api/v1/projects/{world.mine.pk}/items/"


def _codes(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["code"] for r in response.json()["rejected"]]


def test_decompression_bomb_images_are_refused(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_PIXELS = 10_000_000
    # A header claiming 100k x 100k pixels, and a real 1-bit 8000 x 8000 image (a few KB as PNG).
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000
    files = [upload("claims.png", png_claiming_size(100_000, 100_000)), upload("real-bomb.png", buf.getvalue())]
    response = api_as(world.manager).post(_url(world), {"files": files}, format="multipart")
    assert response.status_code == 201
    assert _codes(response) == ["decompression_bomb", "decompression_bomb"]
    assert not Item.objects.filter(project=world.mine, original_name__in=["claims.png", "real-bomb.png"]).exists()


def test_zip_bomb_entry_is_cut_at_the_file_size_cap(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_FILE_BYTES = 1_000_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.png", b"\0" * 20_000_000)  # 20 MB of zeros, ~20 KB compressed
    assert len(buf.getvalue()) < 100_000
    response = api_as(world.manager).post(_url(world), {"zip": upload("bomb.zip", buf.getvalue())}, format="multipart")
    assert response.status_code == 201 and _codes(response) == ["file_too_large"]


def test_zip_bomb_declared_total_and_entry_count_are_refused(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_ZIP_BYTES = 5_000_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"z{i}.png", b"\0" * 2_000_000)
    response = api_as(world.manager).post(_url(world), {"zip": upload("b.zip", buf.getvalue())}, format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "zip_too_large"

    settings.IMPORT_MAX_ZIP_ENTRIES = 10
    blob = make_zip([(f"e{i}.png", b"x") for i in range(11)])
    response = api_as(world.manager).post(_url(world), {"zip": upload("many.zip", blob)}, format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "too_many_files"


def test_oversized_uploads_are_refused(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_FILE_BYTES = 50_000
    big = png_bytes(size=(400, 400)) + b"\0" * 60_000
    response = api_as(world.manager).post(_url(world), {"files": [upload("big.png", big)]}, format="multipart")
    assert response.status_code == 201 and _codes(response) == ["file_too_large"]

    settings.IMPORT_MAX_ZIP_BYTES = 1000
    response = api_as(world.manager).post(
        _url(world), {"zip": upload("z.zip", make_zip([("a.png", png_bytes())]) + b"\0" * 2000)}, format="multipart"
    )
    assert response.status_code == 413


def test_oversized_request_bodies_are_refused(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    body = json.dumps({"urls": ["https://example.org/" + "a" * 1000] * 200})  # ~200 KB of JSON
    response = api_as(world.manager).post(_url(world), body, content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert not Item.objects.filter(project=world.mine, original_name__startswith="https").exists()

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [SimpleUploadedFile(f"f{i}.png", png_bytes(color=(i, 0, 0))) for i in range(4)]
    response = api_as(world.manager).post(_url(world), {"files": files}, format="multipart")
    assert response.status_code in (400, 413), response.status_code
    assert Item.objects.filter(project=world.mine).count() == 1  # the fixture's item only
