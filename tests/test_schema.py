"""The OpenAPI schema is complete and valid, and the browsable docs need no CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def nested_names(settings):  # type: ignore[no-untyped-def]
    """The schema class that names nested Input/OutputSerializers after their view."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_SCHEMA_CLASS": "labeling.api.schema.AutoSchema"}


def test_schema_generates_without_warnings(nested_names, tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    for route, methods in {
        "/api/v1/auth/token/": {"post", "delete"},
        "/api/v1/projects/": {"get", "post"},
        "/api/v1/projects/{project_id}/": {"get", "patch", "delete"},
        "/api/v1/projects/{project_id}/classes/": {"get", "post"},
        "/api/v1/projects/{project_id}/classes/{class_id}/": {"patch", "delete"},
        "/api/v1/projects/{project_id}/members/": {"get", "post"},
        "/api/v1/projects/{project_id}/members/{membership_id}/": {"patch", "delete"},
        "/api/v1/projects/{project_id}/export/": {"get"},
    }.items():
        assert methods <= set(paths[route]), route
    # lists are paginated, and the export documents its own ?format=
    listing = paths["/api/v1/projects/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing["$ref"].endswith("PaginatedProjectList")
    export = paths["/api/v1/projects/{project_id}/export/"]["get"]
    fmt = next(p for p in export["parameters"] if p["name"] == "format")
    assert sorted(fmt["schema"]["enum"]) == ["csv", "json", "jsonl"]
    assert {"application/json", "application/x-ndjson", "text/csv"} <= set(export["responses"]["200"]["content"])


def test_docs_page_uses_no_cdn(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    external = re.findall(r"""(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)""", html)
    assert external == []
    assert not re.search(r"https?://(?!localhost|testserver)[\w.-]+/", html), html
