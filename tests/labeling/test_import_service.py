"""Import service: Pillow checks, rejections, duplicates, zip safety, references, split, thumbnails."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from labeling.errors import ImportRejectedError, ImportTooLargeError
from labeling.models import Item
from labeling.services import items as items_service
from labeling.services.imports import display_name
from labeling.services.items import (
    item_split_for,
    items_import_files,
    items_import_references,
    items_import_zip,
)
from tests.conftest import png_bytes
from tests.factories import ProjectFactory
from tests.labeling.test_import_helpers import (
    distinct_pngs,
    gif_bytes,
    jpeg_bytes,
    make_zip,
    png16_bytes,
    png_claiming_size,
    upload,
)

pytestmark = pytest.mark.django_db


def codes(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r["file"]: r["code"] for r in report.rejected}


def test_imports_png_jpeg_and_16bit_with_thumbnails(settings) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=3, max_overlap=3)
    report = items_import_files(
        project=project,
        files=[upload("a.png", png_bytes()), upload("b.jpeg", jpeg_bytes()), upload("xray.png", png16_bytes())],
    )
    assert report.as_dict() == {"imported": 3, "duplicates": [], "rejected": []}
    items = {i.original_name: i for i in Item.objects.filter(project=project)}
    assert set(items) == {"a.png", "b.jpeg", "xray.png"}
    a, b, xray = items["a.png"], items["b.jpeg"], items["xray.png"]
    assert (a.width, a.height, a.mode) == (32, 24, "RGB")
    assert (b.width, b.height) == (40, 30) and b.file.name.endswith(".jpg")
    assert xray.mode == "I;16" and xray.file.name.endswith(".png")
    for item in items.values():
        assert item.status == Item.Status.OPEN and item.wanted == 3
        assert 0.0 <= item.priority < 1.0
        assert item.file.name.startswith(f"projects/{project.pk}/items/")
        with item.thumbnail.open("rb") as f:
            thumb = Image.open(f)
            thumb.load()
        assert thumb.format == "WEBP" and thumb.mode == "RGB"
        assert max(thumb.size) <= settings.THUMBNAIL_SIZE
    # The 16-bit image uses 1000..5000 of 0..65535; the thumbnail stretches that range.
    with xray.thumbnail.open("rb") as f:
        lo, hi = Image.open(f).convert("L").getextrema()
    assert lo < 20 and hi > 235


def test_multi_picture_camera_jpeg_is_stored_as_jpeg() -> None:
    first, second = Image.new("RGB", (20, 10), (1, 2, 3)), Image.new("RGB", (20, 10), (4, 5, 6))
    buf = io.BytesIO()
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    project = ProjectFactory()
    assert items_import_files(project=project, files=[upload("cam.jpg", buf.getvalue())]).imported == 1
    assert Item.objects.get(project=project).file.name.endswith(".jpg")


def test_thumbnail_is_scaled_down(settings) -> None:  # type: ignore[no-untyped-def]
    settings.THUMBNAIL_SIZE = 16
    project = ProjectFactory()
    items_import_files(project=project, files=[upload("big.png", png_bytes(size=(64, 32)))])
    with Item.objects.get(project=project).thumbnail.open("rb") as f:
        assert Image.open(f).size == (16, 8)


def test_each_rejection_reason_and_the_rest_import(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_FILE_BYTES = 20_000
    good = png_bytes()
    jpeg = jpeg_bytes(size=(64, 64))
    report = items_import_files(
        project=ProjectFactory(),
        files=[
            upload("good.png", good),
            upload("truncated.png", good[: len(good) // 2]),
            upload("truncated.jpg", jpeg[: len(jpeg) - 200]),
            upload("notes.txt", b"hello, not an image"),
            upload("empty.png", b""),
            upload("anim.gif", gif_bytes()),
            upload("bomb.png", png_claiming_size(200_000, 200_000)),
            upload("huge.png", os.urandom(20_001)),
        ],
    )
    assert report.imported == 1
    assert codes(report) == {
        "truncated.png": "corrupt",
        "truncated.jpg": "corrupt",
        "notes.txt": "not_image",
        "empty.png": "not_image",
        "anim.gif": "unsupported_format",
        "bomb.png": "decompression_bomb",
        "huge.png": "file_too_large",
    }
    assert all(r["reason"] for r in report.rejected)


def test_pixel_limit_from_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_PIXELS = 32 * 24 - 1
    report = items_import_files(
        project=ProjectFactory(), files=[upload("a.png", png_bytes()), upload("s.png", png_bytes(size=(8, 8)))]
    )
    assert report.imported == 1 and codes(report) == {"a.png": "decompression_bomb"}


def test_duplicates_within_a_request_and_across_requests() -> None:
    project = ProjectFactory()
    red, blue = png_bytes(color=(255, 0, 0)), png_bytes(color=(0, 0, 255))
    first = items_import_files(project=project, files=[upload("r1.png", red), upload("r2.png", red)])
    assert first.imported == 1
    assert [d["file"] for d in first.duplicates] == ["r2.png"]
    second = items_import_files(project=project, files=[upload("r3.png", red), upload("b.png", blue)])
    assert second.imported == 1 and [d["file"] for d in second.duplicates] == ["r3.png"]
    assert second.duplicates[0]["sha256"] == Item.objects.get(original_name="r1.png").sha256
    # Another project may hold the same content.
    assert items_import_files(project=ProjectFactory(), files=[upload("r.png", red)]).imported == 1


def test_concurrent_insert_of_the_same_content_is_a_duplicate(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Both imports pass the pre-check; the unique constraint decides, the loser cleans up."""
    project = ProjectFactory()
    content = png_bytes(color=(1, 2, 3))
    items_import_files(project=project, files=[upload("first.png", content)])
    stored_before = sorted(default_storage.listdir(f"projects/{project.pk}/items/")[0])
    monkeypatch.setattr(items_service, "_existing_sha256", lambda project, hashes: set())

    report = items_import_files(project=project, files=[upload("second.png", content)])

    assert report.imported == 0 and [d["file"] for d in report.duplicates] == ["second.png"]
    assert Item.objects.filter(project=project).count() == 1
    subdir = f"projects/{project.pk}/items/{stored_before[0]}"
    assert len(default_storage.listdir(subdir)[1]) == 1  # the loser's copy was deleted


def test_eval_split_fraction_and_stability() -> None:
    project = ProjectFactory(eval_fraction=0.5)
    report = items_import_files(
        project=project, files=[upload(f"{i}.png", data) for i, data in enumerate(distinct_pngs(200))]
    )
    assert report.imported == 200
    n_eval = Item.objects.filter(project=project, split=Item.Split.EVALUATION).count()
    assert 70 <= n_eval <= 130  # binomial(200, 0.5): sd ~7
    for item in Item.objects.filter(project=project)[:20]:
        assert item.split == item_split_for(sha256=item.sha256, eval_fraction=0.5)
    assert not Item.objects.filter(project=ProjectFactory(eval_fraction=0.0)).exists()
    none_eval = ProjectFactory(eval_fraction=0.0)
    items_import_files(project=none_eval, files=[upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(20))])
    assert not Item.objects.filter(project=none_eval, split=Item.Split.EVALUATION).exists()


def test_display_name_is_sanitised_and_capped() -> None:
    assert display_name("dir\\sub/evil\u202egnp.exe\x00") == "dir/sub/evilgnp.exe"
    long = display_name("a" * 600 + ".png")
    assert len(long) == 255 and long.endswith(".png")
    assert display_name("") == "unnamed"


# --- zip -------------------------------------------------------------------------------


def test_zip_happy_path_with_folders() -> None:
    project = ProjectFactory()
    blob = make_zip(
        [("cats/1.png", png_bytes(color=(1, 1, 1))), ("cats/2.jpg", jpeg_bytes()), ("3.png", png_bytes())],
        dirs=["cats", "empty"],
    )
    report = items_import_zip(project=project, fileobj=io.BytesIO(blob))
    assert report.as_dict() == {"imported": 3, "duplicates": [], "rejected": []}
    assert set(Item.objects.values_list("original_name", flat=True)) == {"cats/1.png", "cats/2.jpg", "3.png"}


def test_zip_unsafe_entries_are_refused_and_the_rest_import() -> None:
    blob = make_zip(
        [
            ("/etc/abs.png", png_bytes(color=(1, 0, 0))),
            ("../up.png", png_bytes(color=(2, 0, 0))),
            ("a/../../up2.png", png_bytes(color=(3, 0, 0))),
            ("ok.png", png_bytes(color=(4, 0, 0))),
            ("__MACOSX/._ok.png", b"apple double"),
        ],
        symlinks={"link.png": "/etc/passwd"},
    )
    report = items_import_zip(project=ProjectFactory(), fileobj=io.BytesIO(blob))
    assert report.imported == 1
    assert codes(report) == {
        "etc/abs.png": "unsafe_path",
        "../up.png": "unsafe_path",
        "a/../../up2.png": "unsafe_path",
        "link.png": "symlink",
    }


def test_zip_bomb_guards(settings) -> None:  # type: ignore[no-untyped-def]
    # Highly compressible entries: tiny zip, big declared sizes.
    blob = make_zip([("zeros1.png", b"\0" * 400_000), ("zeros2.png", b"\0" * 400_000)])
    assert len(blob) < 10_000
    settings.IMPORT_MAX_ZIP_BYTES = 500_000
    with pytest.raises(ImportTooLargeError) as exc:
        items_import_zip(project=ProjectFactory(), fileobj=io.BytesIO(blob))
    assert exc.value.code == "zip_too_large"

    settings.IMPORT_MAX_ZIP_BYTES = 10_000_000
    settings.IMPORT_MAX_FILE_BYTES = 300_000
    report = items_import_zip(project=ProjectFactory(), fileobj=io.BytesIO(blob))
    assert set(codes(report).values()) == {"file_too_large"}


def test_zip_entry_lying_about_its_size_is_read_with_a_cap(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_MAX_FILE_BYTES = 1000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", b"\0" * 50_000)
    zf = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    info = zf.infolist()[0]
    info.file_size = 10  # the central directory lies; the cap still holds
    from labeling.services.imports import candidate_load, candidates_from_zip

    (candidate,) = list(candidates_from_zip(zf))
    result = candidate_load(candidate)
    assert getattr(result, "code", None) is not None  # a rejection, not 50 kB in memory


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(ImportRejectedError) as exc:
        items_import_zip(project=ProjectFactory(), fileobj=io.BytesIO(b"PK\x03\x04 not really"))
    assert exc.value.code == "invalid_zip"


# --- references --------------------------------------------------------------------------


def test_references_under_import_roots_only(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(png_bytes(color=(9, 9, 9)))
    (root / "sub" / "b.png").write_bytes(png_bytes(color=(8, 8, 8)))
    (root / "sub" / "c.jpg").write_bytes(jpeg_bytes())
    (outside / "secret.png").write_bytes(png_bytes(color=(7, 7, 7)))
    (root / "escape.png").symlink_to(outside / "secret.png")
    settings.IMPORT_ROOTS = [str(root)]
    project = ProjectFactory()

    report = items_import_references(
        project=project,
        references=[
            {"path": str(root / "a.png"), "metadata": {"patient": "p1"}},
            {"path": str(root / "sub"), "metadata": {"batch": 2}},
            {"path": str(outside / "secret.png")},
            {"path": str(root / "escape.png")},
            {"path": str(root / ".." / "outside" / "secret.png")},
            {"path": "relative.png"},
            {"path": str(root / "missing.png")},
        ],
    )
    assert report.imported == 3
    assert sorted(codes(report).values()) == ["not_found"] + ["path_not_allowed"] * 4
    assert Item.objects.get(project=project, original_name="a.png").metadata == {"patient": "p1"}
    assert Item.objects.get(project=project, original_name="sub/b.png").metadata == {"batch": 2}


def test_references_need_import_roots(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_ROOTS = []
    with pytest.raises(ImportRejectedError) as exc:
        items_import_references(project=ProjectFactory(), references=[{"path": "/tmp/x.png"}])
    assert exc.value.code == "import_roots_not_configured"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_imports_of_the_same_file_insert_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two threads (two connections) both pass the duplicate pre-check, then race to insert."""
    import threading

    from django.db import connection

    project = ProjectFactory()
    content = png_bytes(color=(42, 42, 42))
    barrier = threading.Barrier(2, timeout=30)
    real_existing = items_service._existing_sha256

    def existing_then_wait(project, hashes):  # type: ignore[no-untyped-def]
        found = real_existing(project, hashes)
        barrier.wait()  # both have seen "not there yet"
        return found

    monkeypatch.setattr(items_service, "_existing_sha256", existing_then_wait)
    reports = []

    def run(name: str) -> None:
        try:
            reports.append(items_import_files(project=project, files=[upload(name, content)]))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(f"{i}.png",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.imported for r in reports) == [0, 1]
    assert sorted(len(r.duplicates) for r in reports) == [0, 1]
    item = Item.objects.get(project=project)
    subdir = f"projects/{project.pk}/items/{item.sha256[:2]}"
    assert default_storage.listdir(subdir)[1] == [item.file.name.rsplit("/", 1)[1]]
