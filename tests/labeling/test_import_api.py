"""Items API: import (sync 201 / job 202), import-job polling, list, detail, permissions."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from labeling.models import ImportJob, Item, Membership
from tests.conftest import png_bytes
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members
from tests.labeling.test_import_helpers import distinct_pngs, jpeg_bytes, make_zip, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def items_url(project_id: int) -> str:
    return f"/api/v1/projects/{project_id}/items/"


@pytest.fixture
def setup(api_client):  # type: ignore[no-untyped-def]
    project, manager, (annotator,) = project_with_members(n_annotators=1)
    api_client.force_authenticate(manager)
    return project, manager, annotator


def test_multipart_import_returns_201_with_report(api_client, setup) -> None:  # type: ignore[no-untyped-def]
    project, *_ = setup
    red = png_bytes(color=(255, 0, 0))
    response = api_client.post(
        items_url(project.pk),
        {
            "files": [
                upload("a.png", red),
                upload("b.jpg", jpeg_bytes()),
                upload("a-copy.png", red),
                upload("x.txt", b"x"),
            ]
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["imported"] == 2
    assert body["duplicates"] == [{"file": "a-copy.png", "sha256": Item.objects.get(original_name="a.png").sha256}]
    assert body["rejected"] == [{"file": "x.txt", "reason": body["rejected"][0]["reason"], "code": "not_image"}]


def test_small_zip_imports_synchronously(api_client, setup) -> None:  # type: ignore[no-untyped-def]
    project, *_ = setup
    blob = make_zip([("a/1.png", png_bytes(color=(1, 2, 3))), ("../evil.png", png_bytes())])
    response = api_client.post(items_url(project.pk), {"zip": upload("set.zip", blob)}, format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json()["imported"] == 1
    assert response.json()["rejected"][0]["code"] == "unsafe_path"


def test_large_zip_runs_as_a_job_with_progress(  # type: ignore[no-untyped-def]
    api_client, setup, settings, django_capture_on_commit_callbacks
) -> None:
    project, *_ = setup
    settings.IMPORT_SYNC_MAX_FILES = 5
    pngs = distinct_pngs(12)
    blob = make_zip([(f"img/{i}.png", data) for i, data in enumerate(pngs)] + [("dup.png", pngs[0])])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api_client.post(items_url(project.pk), {"zip": upload("big.zip", blob)}, format="multipart")
    assert response.status_code == 202, response.json()
    assert len(callbacks) == 1
    job_body = response.json()
    assert job_body["status"] == "pending" and job_body["total"] == 13 and job_body["source"] == "zip: big.zip"

    polled = api_client.get(job_body["url"])
    assert polled.status_code == 200
    job = polled.json()
    assert job["status"] == "succeeded", job
    assert (job["processed"], job["total"]) == (13, 13)
    assert job["report"]["imported"] == 12
    assert [d["file"] for d in job["report"]["duplicates"]] == ["dup.png"]
    assert Item.objects.filter(project=project).count() == 12
    # The staged upload is gone once the job is done.
    assert not default_storage.exists(f"imports/{job['id']}/upload.zip")


def test_many_uploaded_files_run_as_a_job(  # type: ignore[no-untyped-def]
    api_client, setup, settings, django_capture_on_commit_callbacks
) -> None:
    project, *_ = setup
    settings.IMPORT_SYNC_MAX_FILES = 2
    files = [upload(f"{i}.png", data) for i, data in enumerate(distinct_pngs(4))] + [upload("bad.png", b"nope")]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(items_url(project.pk), {"files": files}, format="multipart")
    assert response.status_code == 202
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert job.status == ImportJob.Status.SUCCEEDED
    assert job.report["imported"] == 4 and job.report["rejected"][0]["file"] == "bad.png"
    assert job.processed == job.total == 5
    assert sorted(Item.objects.values_list("original_name", flat=True)) == ["0.png", "1.png", "2.png", "3.png"]


def test_references_json_import(api_client, setup, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project, *_ = setup
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes(color=(5, 5, 5)))
    settings.IMPORT_ROOTS = [str(root)]
    response = api_client.post(
        items_url(project.pk),
        {"references": [{"path": str(root / "a.png"), "metadata": {"site": "A"}}, {"path": "/etc/passwd"}]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["imported"] == 1
    assert response.json()["rejected"][0]["code"] == "path_not_allowed"
    assert Item.objects.get(project=project).metadata == {"site": "A"}

    bad = api_client.post(
        items_url(project.pk), {"references": [{"path": str(root / "a.png"), "metadata": [1, 2]}]}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"


def test_folder_reference_runs_as_a_job(  # type: ignore[no-untyped-def]
    api_client, setup, settings, tmp_path: Path, django_capture_on_commit_callbacks
) -> None:
    project, *_ = setup
    root = tmp_path / "data"
    (root / "batch").mkdir(parents=True)
    for i, data in enumerate(distinct_pngs(3)):
        (root / "batch" / f"{i}.png").write_bytes(data)
    settings.IMPORT_ROOTS = [str(root)]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            items_url(project.pk), {"references": [{"path": str(root / "batch")}]}, format="json"
        )
    assert response.status_code == 202
    job = api_client.get(response.json()["url"]).json()
    assert job["status"] == "succeeded" and job["report"]["imported"] == 3 and job["total"] == 3


def test_import_errors(api_client, setup, settings) -> None:  # type: ignore[no-untyped-def]
    project, *_ = setup
    settings.IMPORT_ROOTS = []
    url = items_url(project.pk)
    assert api_client.post(url, {}, format="multipart").json()["code"] == "invalid_import"
    not_zip = api_client.post(url, {"zip": upload("x.zip", b"not a zip")}, format="multipart")
    assert (not_zip.status_code, not_zip.json()["code"]) == (400, "invalid_zip")
    no_roots = api_client.post(url, {"references": [{"path": "/x.png"}]}, format="json")
    assert (no_roots.status_code, no_roots.json()["code"]) == (400, "import_roots_not_configured")
    settings.IMPORT_MAX_ZIP_BYTES = 10
    too_big = api_client.post(url, {"zip": upload("x.zip", make_zip([("a.png", png_bytes())]))}, format="multipart")
    assert (too_big.status_code, too_big.json()["code"]) == (413, "zip_too_large")


def test_import_permissions(api_client, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, annotator = setup
    files = {"files": [upload("a.png", png_bytes())]}
    api_client.force_authenticate(annotator)
    response = api_client.post(items_url(project.pk), files, format="multipart")
    assert (response.status_code, response.json()["code"]) == (403, "role_required")
    api_client.force_authenticate(UserFactory())
    assert api_client.post(items_url(project.pk), files, format="multipart").status_code == 404
    api_client.force_authenticate(None)
    assert api_client.post(items_url(project.pk), files, format="multipart").status_code in {401, 403}
    assert not Item.objects.exists()


def test_list_filters_and_pagination(api_client, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, annotator = setup
    train = [ItemFactory(project=project) for _ in range(3)]
    evaluation = ItemFactory(project=project, split=Item.Split.EVALUATION)
    ItemFactory()  # another project's
    response = api_client.get(items_url(project.pk), {"limit": 2})
    body = response.json()
    assert response.status_code == 200 and body["count"] == 4 and len(body["results"]) == 2
    first = body["results"][0]
    assert first["id"] == train[0].pk and first["image_url"] == f"/files/items/{train[0].pk}/image"
    only_eval = api_client.get(items_url(project.pk), {"split": "evaluation"}).json()
    assert [i["id"] for i in only_eval["results"]] == [evaluation.pk]
    assert api_client.get(items_url(project.pk), {"status": "done"}).json()["count"] == 0
    assert api_client.get(items_url(project.pk), {"split": "nope"}).json()["code"] == "validation_error"

    reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    api_client.force_authenticate(reviewer)
    assert api_client.get(items_url(project.pk)).status_code == 200
    api_client.force_authenticate(annotator)
    assert api_client.get(items_url(project.pk)).status_code == 403
    api_client.force_authenticate(UserFactory())
    assert api_client.get(items_url(project.pk)).status_code == 404


def test_item_detail_and_wrong_project(api_client, setup) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = setup
    item = ItemFactory(project=project)
    response = api_client.get(f"{items_url(project.pk)}{item.pk}/")
    assert response.status_code == 200 and response.json()["sha256"] == item.sha256
    other, other_manager, _ = project_with_members()
    MembershipFactory(project=other, user=manager, role=Membership.Role.MANAGER)
    # The item exists, and the caller manages both projects, but not under this project id.
    assert api_client.get(f"{items_url(other.pk)}{item.pk}/").status_code == 404
    api_client.force_authenticate(other_manager)
    assert api_client.get(f"{items_url(project.pk)}{item.pk}/").status_code == 404


def test_import_job_is_visible_to_its_project_managers_only(  # type: ignore[no-untyped-def]
    api_client, setup, settings, django_capture_on_commit_callbacks
) -> None:
    project, _, annotator = setup
    settings.IMPORT_SYNC_MAX_FILES = 0
    with django_capture_on_commit_callbacks(execute=False):
        response = api_client.post(items_url(project.pk), {"files": [upload("a.png", png_bytes())]}, format="multipart")
    url = response.json()["url"]
    assert api_client.get(url).json()["status"] == "pending"
    assert api_client.get(url).json()["report"] is None
    api_client.force_authenticate(annotator)
    assert api_client.get(url).status_code == 403
    api_client.force_authenticate(UserFactory())
    assert api_client.get(url).status_code == 404
    assert api_client.get("/api/v1/import-jobs/999999/").status_code == 404
