"""Attack: zip-slip (entry names that climb out of the target folder) and symlink entries.

Defence: labeling/services/imports.py ``zip_entry_rejection`` refuses absolute names,
drive letters, '..' parts (with / or \\) and symlink entries before reading them; and
entries are never extracted to disk at all (read in memory; stored under a name made from
the content hash), so even a name that slipped through could not choose where it lands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labeling.models import Item
from tests.conftest import png_bytes
from tests.labeling.test_import_helpers import make_zip, upload
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db

SLIPS = [
    "../../../../tmp/zipslip-1.png",
    "ok/../../zipslip-2.png",
    "..\\..\\zipslip-3.png",
    "sub\\..\\..\\zipslip-4.png",
    "/tmp/zipslip-5.png",
    "\\\\server\\share\\zipslip-6.png",
    "C:\\Windows\\zipslip-7.png",
    "C:/zipslip-8.png",
]


def _post_zip(world: World, blob: bytes) -> dict:  # type: ignore[type-arg]
    response = api_as(world.manager).post(
        f"/api/v1/projects/{world.mine.pk}/items/", {"zip": upload("evil.zip", blob)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_zip_slip_entry_names_are_refused(world: World, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blob = make_zip(
        [(name, png_bytes(color=(i, 9, 9))) for i, name in enumerate(SLIPS)] + [("fine/ok.png", png_bytes())]
    )
    report = _post_zip(world, blob)
    assert report["imported"] == 1
    assert [r["code"] for r in report["rejected"]] == ["unsafe_path"] * len(SLIPS)
    assert not list(Path("/tmp").glob("zipslip-*")) and not list(tmp_path.rglob("zipslip-*"))
    stored = Item.objects.get(project=world.mine, original_name="fine/ok.png").file.name
    assert stored.startswith(f"projects/{world.mine.pk}/items/")


def test_zip_symlink_entries_are_refused(world: World) -> None:
    blob = make_zip([("real.png", png_bytes())], symlinks={"link.png": "/etc/passwd", "up.png": "../../secret.png"})
    report = _post_zip(world, blob)
    assert report["imported"] == 1
    assert sorted((r["file"], r["code"]) for r in report["rejected"]) == [
        ("link.png", "symlink"),
        ("up.png", "symlink"),
    ]
