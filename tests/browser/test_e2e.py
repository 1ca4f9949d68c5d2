"""End to end in headless Chromium: an annotator labels with the keyboard; a manager sets up a
project, imports and exports; an annotator is kept out of the manager's pages.

Each test saves a screenshot of every page it visits under test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import Annotation, ImportJob, Item, Lease, Membership, Project
from labeling.services.items import items_import_files
from tests.browser.support import login
from tests.conftest import png_bytes
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests-123"  # tests.factories.UserFactory's password


def _pngs(n: int, prefix: str) -> list[tuple[str, bytes]]:
    """``n`` distinct real PNGs (Pillow), each a different colour so none is a duplicate."""
    return [(f"{prefix}{i:02d}.png", png_bytes(color=(10 * i % 256, 255 - 7 * i % 256, 90))) for i in range(n)]


def _expect():  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    return expect


# --- 1. an annotator labels with the keyboard alone ----------------------------------------------
def _wait_for_item(expect, file_cell, previous: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Wait until the workspace shows an item (not the "—" of "Loading…") other than ``previous``."""
    shown = {"—"} | ({previous} if previous else set())
    expect(file_cell).not_to_have_text(re.compile("^(" + "|".join(re.escape(s) for s in shown) + ")$"))
    return file_cell.inner_text()


def test_annotator_labels_ten_items_with_keyboard_undoes_one_and_skips_one(new_page, shots) -> None:  # type: ignore[no-untyped-def]
    """Ten labels by shortcut key, ``u`` on the tenth (already sent), then ``s`` on it when it comes back.

    Expected in the database: 10 annotations by the annotator, 9 kept (one per item, with the
    keys' labels) and 1 retracted (the tenth's); 9 submitted leases and 1 skipped lease, the
    tenth's: undo reopened that lease and the skip closed it; nothing else is labeled.
    """
    expect = _expect()
    project = ProjectFactory(name="Keyboard project", classes=["cat", "dog", "bird"])  # keys 1, 2, 3
    annotator = MembershipFactory(project=project, role=Membership.Role.ANNOTATOR).user
    report = items_import_files(
        project=project,
        files=[SimpleUploadedFile(name, data, content_type="image/png") for name, data in _pngs(12, "kb")],
    )
    assert report.imported == 12
    names = {"1": "cat", "2": "dog", "3": "bird"}

    page = new_page()
    login(page, annotator.username, PASSWORD)
    shots(page, "home")
    page.keyboard.press("Tab")  # keyboard only, also to open the workspace: Tab to the link, Enter
    while page.evaluate("document.activeElement && document.activeElement.textContent.trim()") != "Start labeling":
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/projects/{project.pk}/label/")
    file_cell, outbox, count = page.locator("#ws-file"), page.locator("#ws-outbox"), page.locator("#ws-count")
    name = _wait_for_item(expect, file_cell)
    expect(page.locator("#ws-image")).to_be_visible()
    shots(page, "workspace-first-item")

    labeled: dict[str, str] = {}
    for i in range(10):
        key = "123"[i % 3]
        page.keyboard.press(key)
        labeled[name] = names[key]
        expect(count).to_have_text(str(i + 1))
        if i < 9:
            name = _wait_for_item(expect, file_cell, previous=name)
    tenth = name
    assert len(labeled) == 10
    expect(outbox).to_have_text("0")  # every label has reached the server
    expect(page.locator("#ws-undo")).to_be_enabled()
    shots(page, "after-ten-labels")

    page.keyboard.press("u")  # the tenth label was sent: the server retracts it and reopens its lease
    expect(file_cell).to_have_text(tenth)
    expect(count).to_have_text("9")
    shots(page, "after-undo")
    page.keyboard.press("s")  # skip the item whose label was undone
    _wait_for_item(expect, file_cell, previous=tenth)
    expect(outbox).to_have_text("0")
    expect(count).to_have_text("9")
    shots(page, "after-skip")
    assert page.js_errors == []

    mine = Annotation.objects.filter(annotator=annotator).select_related("item", "label")
    kept = mine.filter(retracted_at__isnull=True)
    assert mine.count() == 10
    assert kept.count() == 9 == len({a.item_id for a in kept})  # one kept annotation per item
    assert {a.item.original_name: a.label.name for a in kept} == {k: v for k, v in labeled.items() if k != tenth}
    (retracted,) = mine.filter(retracted_at__isnull=False)
    assert (retracted.item.original_name, retracted.label.name) == (tenth, labeled[tenth])
    leases = Lease.objects.filter(annotator=annotator)
    assert leases.filter(state=Lease.State.SUBMITTED).count() == 9
    (skipped,) = leases.filter(state=Lease.State.SKIPPED)
    assert skipped.pk == retracted.lease_id  # undo reopened the tenth's lease; the skip closed it
    assert skipped.item.original_name == tenth
    assert not kept.filter(item=skipped.item).exists()
    assert Item.objects.filter(project=project, annotation_count__gt=1).count() == 0


# --- 2. a manager creates a project, imports, watches, exports -------------------------------------
# Records every state the import box goes through (upload, queued, polling, done), so the test
# sees the progress the manager watches, not only its end.
_WATCH_IMPORT = """() => {
  window.importTrail = [];
  const box = document.getElementById("import-status");
  const bar = document.getElementById("import-progress");
  const phase = document.getElementById("import-phase");
  const note = () => {
    const step = [box.dataset.state || "", Number(bar.getAttribute("aria-valuenow")), phase.textContent];
    const last = window.importTrail[window.importTrail.length - 1];
    if (!last || last.join("|") !== step.join("|")) window.importTrail.push(step);
  };
  new MutationObserver(note).observe(box, { attributes: true, childList: true, subtree: true, characterData: true });
}"""


@pytest.mark.redis
@pytest.mark.celery_worker
def test_manager_creates_project_imports_images_and_downloads_exports(  # type: ignore[no-untyped-def]
    new_page, shots, settings, celery_worker_process
) -> None:
    """Through the pages only: create a project, upload 25 PNGs (a background import run by a
    real Celery worker on Redis), watch the progress to the end, download the JSON and CSV exports."""
    expect = _expect()
    settings.IMPORT_SYNC_MAX_FILES = 20  # 25 files: the import runs as a background job
    user = UserFactory(username="manager")
    files = _pngs(25, "scan")

    page = new_page()
    login(page, user.username, PASSWORD)
    shots(page, "home-empty")
    page.get_by_role("link", name="New project").click()
    page.wait_for_url("**/projects/new/")
    page.get_by_label("Name").fill("Chest <b>X-rays</b>")
    page.get_by_label("Instructions").fill("Look for nodules.")
    page.get_by_label("Classes").fill("normal, n\nnodule\nother")
    page.get_by_label("Overlap").fill("1")
    page.get_by_label("Evaluation fraction").fill("0.2")
    shots(page, "new-project-form")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/projects/\d+/manage/$"))
    project = Project.objects.get()
    assert project.name == "Chest <b>X-rays</b>" and project.eval_fraction == 0.2
    expect(page.locator("#project-name")).to_have_text("Chest <b>X-rays</b>")  # shown as text, escaped
    expect(page.locator("#items-total")).to_have_text("0")
    shots(page, "manage-empty")

    page.locator("#import-files").set_input_files(
        [{"name": name, "mimeType": "image/png", "buffer": data} for name, data in files]
    )
    page.evaluate(_WATCH_IMPORT)
    page.get_by_role("button", name="Upload").click()
    status = page.locator("#import-status")
    expect(status).to_have_attribute("data-state", "polling")  # 202: queued for the worker
    shots(page, "manage-import-in-progress")
    expect(status).to_have_attribute("data-state", "done", timeout=60_000)
    trail = page.evaluate("window.importTrail")
    print("import progress as shown:", *trail, sep="\n  ")
    states = [state for state, _, _ in trail]
    assert states[0] == "uploading" and states[-1] == "done", trail
    assert "polling" in states, trail
    assert any(text == "Queued for import…" for _, _, text in trail), trail
    polled = [percent for state, percent, _ in trail if state == "polling"]
    assert polled == sorted(polled), trail  # the bar never goes back
    assert trail[-1][1:] == [100, "Import finished (100%)."], trail
    expect(page.locator("#import-progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#import-summary")).to_have_text("Imported 25 images, 0 duplicates skipped, 0 refused.")
    expect(page.locator("#items-total")).to_have_text("25")
    expect(page.locator("#items-status-open")).to_have_text("25")  # the counters follow without a reload
    expect(page.locator("#items-done")).to_have_text("0 (0%)")
    shots(page, "manage-import-finished")
    job = ImportJob.objects.get(project=project)  # it went through the background job, not the 201 path
    assert (job.status, job.processed, job.total, job.report["imported"]) == ("succeeded", 25, 25, 25)
    assert Item.objects.filter(project=project).count() == 25

    page.reload()
    expect(page.locator("#import-jobs")).to_contain_text("Succeeded")
    expect(page.locator("#import-jobs")).to_contain_text("25 / 25")
    shots(page, "manage-after-reload")

    expected_names = {name for name, _ in files}
    with page.expect_download() as download:
        page.locator("#export-json").click()
    assert download.value.suggested_filename == f"annotate-{project.pk}-chest-bx-raysb.json"
    document = json.loads(open(download.value.path(), encoding="utf-8").read())  # noqa: SIM115
    assert {item["file_name"] for item in document["items"]} == expected_names
    assert [c["name"] for c in document["classes"]] == ["normal", "nodule", "other"]

    with page.expect_download() as download:
        page.locator("#export-csv").click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))  # noqa: SIM115
    assert {row["file_name"] for row in rows} == expected_names
    assert {row["split"] for row in rows} <= {"train", "evaluation"}

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(f"**/projects/{project.pk}/dashboard/")
    expect(page.locator("#dash-generated")).not_to_have_text("Loading…")
    shots(page, "dashboard")
    page.goto("/")
    expect(page.get_by_role("link", name="Manage")).to_have_attribute("href", f"/projects/{project.pk}/manage/")
    shots(page, "home-with-project")
    assert page.js_errors == []


# --- 3. an annotator cannot open the manager's pages -------------------------------------------------
def test_annotator_cannot_open_manager_pages(new_page, shots, settings) -> None:  # type: ignore[no-untyped-def]
    """403 for a member without the manager role, 404 for a non-member, on every manager page.

    ``/projects/new/`` is open to any signed-in user by default (they become the new project's
    manager); a site that sets ``PROJECT_CREATE_REQUIRES_STAFF`` keeps it for staff, as here.
    """
    expect = _expect()
    settings.PROJECT_CREATE_REQUIRES_STAFF = True
    project = ProjectFactory(name="Guarded", classes=["a", "b"])
    MembershipFactory(project=project, role=Membership.Role.MANAGER)
    annotator = MembershipFactory(project=project, role=Membership.Role.ANNOTATOR).user
    outsider = UserFactory()

    page = new_page()
    login(page, annotator.username, PASSWORD)
    expect(page.get_by_role("link", name="Start labeling")).to_be_visible()
    expect(page.get_by_role("link", name="Manage")).to_have_count(0)
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    shots(page, "annotator-home")

    for name, url in [
        ("new-project", "/projects/new/"),
        ("dashboard", f"/projects/{project.pk}/dashboard/"),
        ("manage", f"/projects/{project.pk}/manage/"),
        ("export-api", f"/api/v1/projects/{project.pk}/export/?format=csv"),
        ("import-api", f"/api/v1/projects/{project.pk}/items/"),
    ]:
        response = page.goto(url)
        assert response is not None and response.status == 403, (name, response and response.status)
        shots(page, f"annotator-{name}-403")
    assert "role_required" in page.content()

    response = page.goto("/admin/")  # not staff: Django's admin sends the user to its own sign-in
    assert response is not None and response.status == 200
    assert re.search(r"/admin/login/\?next=/admin/$", page.url)
    shots(page, "annotator-admin-redirect")

    other = new_page()
    login(other, outsider.username, PASSWORD)
    for name, url in [
        ("manage", f"/projects/{project.pk}/manage/"),
        ("dashboard", f"/projects/{project.pk}/dashboard/"),
        ("export-api", f"/api/v1/projects/{project.pk}/export/?format=csv"),
    ]:
        response = other.goto(url)
        assert response is not None and response.status == 404, (name, response and response.status)  # unseen
        shots(other, f"outsider-{name}-404")
    response = other.goto("/projects/new/")
    assert response is not None and response.status == 403
    assert Project.objects.count() == 1  # nobody created anything
    assert page.js_errors == [] and other.js_errors == []


# --- the harness itself: a page that throws is caught ------------------------------------------------
def test_a_javascript_error_in_a_page_is_caught(new_page) -> None:  # type: ignore[no-untyped-def]
    """The check the other tests rely on ("no JS error on any page") can fail."""
    page = new_page()
    page.goto("/accounts/login/")
    page.evaluate("setTimeout(() => { throw new Error('deliberate failure for the harness test'); }, 0)")
    page.wait_for_function("true")
    page.wait_for_timeout(200)
    assert any("deliberate failure for the harness test" in e for e in page.js_errors), page.js_errors
    page.js_errors.clear()  # expected here: do not fail this test's teardown
