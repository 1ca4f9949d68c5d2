"""Regression tests for what the schema fuzzer (test_api_fuzz.py) found; one per finding."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.factories import project_with_members

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def openapi() -> dict:  # type: ignore[type-arg]
    return SchemaGenerator().get_schema(request=None, public=True)


def test_unrouted_api_url_answers_the_json_error_envelope(client) -> None:  # type: ignore[no-untyped-def]
    # /projects/<int:project_id>/ does not match "null,null": Django's HTML 404 page used to answer.
    response = client.get("/api/v1/projects/null,null/dashboard/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_unrouted_page_url_keeps_the_html_404(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_annotation_list_schema_documents_the_paginated_envelope(openapi, api_client) -> None:  # type: ignore[no-untyped-def]
    op = openapi["paths"]["/api/v1/projects/{project_id}/annotations/"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"count", "next", "previous", "results"} <= set(component["properties"])
    # ... which is what the view returns
    project, manager, _ = project_with_members()
    api_client.force_authenticate(manager)
    body = api_client.get(f"/api/v1/projects/{project.pk}/annotations/").json()
    assert set(body) == {"count", "next", "previous", "results"}


def test_every_operation_documents_its_error_statuses(openapi) -> None:  # type: ignore[no-untyped-def]
    error_ref = "#/components/schemas/Error"
    for route, methods in openapi["paths"].items():
        for method, op in methods.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            assert {"401", "403"} <= codes, (method, route)
            if "{" in route:
                assert "404" in codes, (method, route)
            if method in ("post", "put", "patch"):
                assert "400" in codes, (method, route)
    dashboard_404 = openapi["paths"]["/api/v1/projects/{project_id}/dashboard/"]["get"]["responses"]["404"]
    assert dashboard_404["content"]["application/json"]["schema"]["$ref"] == error_ref


def test_class_order_beyond_the_column_range_is_a_400(api_client) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL answered "integer out of range" (a 500) for an order of 2**31 and more.
    project, manager, _ = project_with_members()
    api_client.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/classes/"
    response = api_client.post(url, {"name": "huge", "order": 2**31}, format="json")
    assert response.status_code == 400
    assert "order" in response.json()["extra"]["fields"]
    cls = api_client.get(url).json()
    first = (cls["results"] if isinstance(cls, dict) else cls)[0]["id"]
    assert api_client.patch(f"{url}{first}/", {"order": 2**40}, format="json").status_code == 400
