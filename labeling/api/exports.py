"""API: the streamed dataset export, ``GET /api/v1/projects/{id}/export/``.

Managers and reviewers may export (annotators 403 ``role_required``: an export shows
everybody's work; non-members 404). The body is a StreamingHttpResponse fed chunk by
chunk from ``labeling.selectors.exports``, so memory stays flat at any project size.

``?format=`` is this API's parameter, but it is also DRF's URL_FORMAT_OVERRIDE: DRF's
default content negotiation would look for a renderer named ``csv`` and answer 404. The
export does not use DRF renderers for its body, so this view negotiates without looking
at the query string (errors are still JSON through the exception handler), and keeps
DRF's token/session authentication, throttling and schema.
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.urls import path
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from labeling.models import Item
from labeling.selectors.access import REVIEW, project_access
from labeling.selectors.exports import CONTENT_TYPES, FORMATS, ExportFilters, export_stream


class IgnoreFormatParamNegotiation(DefaultContentNegotiation):
    """Always the first renderer (JSON, used for error bodies only); ``?format=`` is ours."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class ProjectExportApi(APIView):
    """Stream the project's dataset: items, their live annotations and consensus."""

    content_negotiation_class = IgnoreFormatParamNegotiation
    renderer_classes = [JSONRenderer]

    class FilterSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=FORMATS, default="json")
        split = serializers.ChoiceField(choices=Item.Split.choices, required=False)
        status = serializers.ListField(
            child=serializers.ChoiceField(choices=Item.Status.choices), required=False, default=list
        )

        class Meta:
            ref_name = "ExportFilter"

    @extend_schema(
        operation_id="project_export",
        parameters=[
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=list(FORMATS),
                default="json",
                description="json: one document {project, classes, items}; jsonl: one item per line; "
                "csv: one row per annotation (an item without annotations: one row with empty cells).",
            ),
            OpenApiParameter(
                "split",
                OpenApiTypes.STR,
                enum=list(Item.Split.values),
                required=False,
                description="Only the training or the evaluation split.",
            ),
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                required=False,
                description=f"Only items with these statuses, comma-separated or repeated: "
                f"{', '.join(Item.Status.values)}.",
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="The JSON document."),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON item per line."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per annotation."),
            400: OpenApiResponse(description="validation_error: unknown format, split or status"),
            403: OpenApiResponse(description="role_required: annotators cannot export"),
            404: OpenApiResponse(description="not_found: no such project, or you are not a member"),
        },
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        project, _ = project_access(project_id=project_id, user=request.user, roles=REVIEW)
        statuses = [s for value in request.query_params.getlist("status") for s in value.split(",") if s]
        query = {k: v for k, v in request.query_params.items() if k in ("format", "split")}
        payload = self.FilterSerializer(data={**query, "status": statuses})
        payload.is_valid(raise_exception=True)
        fmt: str = payload.validated_data["format"]
        filters = ExportFilters(
            split=payload.validated_data.get("split"), statuses=tuple(dict.fromkeys(payload.validated_data["status"]))
        )
        response = StreamingHttpResponse(
            export_stream(project=project, fmt=fmt, filters=filters), content_type=CONTENT_TYPES[fmt]
        )
        name = slugify(project.name)[:60] or "project"
        response["Content-Disposition"] = f'attachment; filename="annotate-{project.pk}-{name}.{fmt}"'
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"  # nginx: pass chunks on instead of buffering the export
        return response


urlpatterns = [
    path("projects/<int:project_id>/export/", ProjectExportApi.as_view(), name="api-project-export"),
]
