"""``manage.py import_items``: progress lines, summary, JSON report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labeling.models import Item
from tests.conftest import png_bytes
from tests.factories import ProjectFactory
from tests.labeling.test_import_helpers import distinct_pngs

pytestmark = pytest.mark.django_db


def folder(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for i, data in enumerate(distinct_pngs(n)):
        (root / ("sub" if i % 2 else "") / f"{i}.png").write_bytes(data)
    (root / "readme.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(png_bytes())
    return root


def test_command_prints_progress_and_summary(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from labeling.services import items as items_service

    monkeypatch.setattr(items_service, "BATCH_FILES", 2)
    project = ProjectFactory()
    out = io.StringIO()
    call_command("import_items", str(project.pk), str(folder(tmp_path, 5)), stdout=out)
    lines = out.getvalue().splitlines()
    assert "2/6" in lines and lines.count("6/6") == 1
    assert "imported 5, duplicates 0, rejected 1" in lines
    assert any(line.startswith("rejected readme.txt: not_image") for line in lines)
    assert sorted(Item.objects.values_list("original_name", flat=True)) == sorted(
        ["0.png", "sub/1.png", "2.png", "sub/3.png", "4.png"]
    )


def test_command_json_report_and_rerun_reports_duplicates(tmp_path: Path) -> None:
    project = ProjectFactory()
    root = folder(tmp_path, 3)
    call_command("import_items", str(project.pk), str(root), stdout=io.StringIO())
    out = io.StringIO()
    call_command("import_items", str(project.pk), str(root), "--json", stdout=out)
    report = json.loads(out.getvalue().splitlines()[-1])
    assert report["imported"] == 0 and len(report["duplicates"]) == 3
    assert report["rejected"][0]["code"] == "not_image"


def test_command_errors(tmp_path: Path) -> None:
    with pytest.raises(CommandError):
        call_command("import_items", "999999", str(tmp_path), stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("import_items", str(ProjectFactory().pk), str(tmp_path / "nope"), stdout=io.StringIO())
