"""API: the manager dashboard (JSON for the charts, CSV for spreadsheets). Managers only.

A non-member gets 404 and a member without the manager role 403, like every project
resource (``labeling.selectors.access``). The CSV views return a plain ``HttpResponse`` from
an ``APIView``, so token auth and the JSON error format still apply; they take ``?by=``,
never DRF's reserved ``?format=``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Project
from labeling.selectors.access import MANAGE, project_access
from labeling.selectors.dashboard import (
    dashboard_cache_seconds,
    default_target_accuracy,
    project_cost_summary_cached,
    project_dashboard,
    project_learning_curve,
    project_live_jobs,
)


def jsonable(value: Any) -> Any:
    """Dataclasses -> dicts; money (Decimal) -> float rounded to 4 places; dates -> ISO strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "cov"}
        if isinstance(getattr(type(value), "total", None), property):  # SpendRow.total
            out["total"] = jsonable(getattr(value, "total"))  # noqa: B009
        return out
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return round(float(value), 4)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _manager_project(request: Request, project_id: int) -> Project:
    project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
    return project


class DashboardQuerySerializer(serializers.Serializer):
    target_accuracy = serializers.FloatField(required=False, min_value=0.01, max_value=0.9999)


def _target(request: Request) -> float:
    params = DashboardQuerySerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    return float(params.validated_data.get("target_accuracy", default_target_accuracy()))


class DashboardGetApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("target_accuracy", float, description="Accuracy to project to (default 0.9).")],
        responses={200: OpenApiTypes.OBJECT},
        description="Everything on the dashboard: project, generated_at, cost, progress, throughput, "
        "learning_curve, confusion, quality, jobs. See docs/dashboard.md.",
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = _manager_project(request, project_id)
        dashboard = project_dashboard(
            project=project, target_accuracy=_target(request), max_age_seconds=dashboard_cache_seconds()
        )
        data = jsonable(dashboard)
        data["project"] = {"id": project.pk, "name": project.name, "overlap": project.overlap}
        del data["project_id"], data["project_name"]
        return Response(data)


class DashboardJobsApi(APIView):
    """The live jobs alone: cheap enough for the page to poll every few seconds."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project_id: int) -> Response:
        project = _manager_project(request, project_id)
        return Response({"jobs": jsonable(project_live_jobs(project_id=project.pk))})


def _csv_response(filename: str, header: list[str], rows: list[list[Any]]) -> HttpResponse:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(buf.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class SpendCsvQuerySerializer(serializers.Serializer):
    by = serializers.ChoiceField(choices=["annotator", "day"], default="annotator")


class DashboardSpendCsvApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("by", str, enum=["annotator", "day"])],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, project_id: int) -> HttpResponse:
        project = _manager_project(request, project_id)
        params = SpendCsvQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        by = params.validated_data["by"]
        cost = project_cost_summary_cached(project_id=project.pk, max_age_seconds=dashboard_cache_seconds())
        spend_rows = cost.by_person if by == "annotator" else cost.by_day
        header = [
            "user_id" if by == "annotator" else "day",
            "username" if by == "annotator" else "label",
            "annotations",
            "active_hours",
            "annotation_cost",
            "reviews",
            "review_cost",
            "total",
        ]
        rows = [
            [
                r.key,
                r.label,
                r.annotations,
                f"{r.active_hours:.4f}",
                f"{r.annotation_cost:.4f}",
                r.reviews,
                f"{r.review_cost:.4f}",
                f"{r.total:.4f}",
            ]
            for r in spend_rows
        ]
        if by == "day":
            header, rows = header[:1] + header[2:], [r[:1] + r[2:] for r in rows]
        return _csv_response(f"project-{project.pk}-spend-by-{by}.csv", header, rows)


class DashboardLearningCurveCsvApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, project_id: int) -> HttpResponse:
        project = _manager_project(request, project_id)
        curve = project_learning_curve(project=project, target_accuracy=_target(request))
        rows = [
            [p.model_version, p.n_train, f"{p.cost:.2f}", f"{p.accuracy:.6f}", int(p.is_active)] for p in curve.points
        ]
        return _csv_response(
            f"project-{project.pk}-learning-curve.csv",
            ["model_version", "n_train", "cost_at_training", "eval_accuracy", "is_active"],
            rows,
        )


urlpatterns = [
    path("projects/<int:project_id>/dashboard/", DashboardGetApi.as_view(), name="api-dashboard"),
    path("projects/<int:project_id>/dashboard/jobs/", DashboardJobsApi.as_view(), name="api-dashboard-jobs"),
    path("projects/<int:project_id>/dashboard/spend.csv", DashboardSpendCsvApi.as_view(), name="api-dashboard-spend"),
    path(
        "projects/<int:project_id>/dashboard/learning-curve.csv",
        DashboardLearningCurveCsvApi.as_view(),
        name="api-dashboard-learning-curve",
    ),
]
