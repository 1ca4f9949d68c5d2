"""API: items of a project (import, list, detail) and import jobs.

Access: importing, listing and reading items needs ``manager`` (``reviewer`` may also list
and read); annotators get 403 ``role_required``; non-members 404. Annotators see items
through the queue, not here.

Import takes multipart files, a zip, JSON ``references`` (server paths) or JSON ``urls``
(fetched by the server through the SSRF guard in ``labeling.services.fetch``).

Import answers 201 with the report when the import was small enough to run in the
request, else 202 with an ImportJob to poll at ``/api/v1/import-jobs/{id}/``.
"""

from __future__ import annotations

from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.projects import ERRORS, ApiPagination, paginated_response
from labeling.models import ImportJob, Item
from labeling.selectors.access import MANAGE, REVIEW, item_access, project_access
from labeling.selectors.items import import_job_get, item_list
from labeling.services.imports import METADATA_MAX_BYTES, ImportReport, metadata_check
from labeling.services.items import items_import_request

TOO_LARGE = {413: OpenApiResponse(description="import_too_large / zip_too_large / too_many_files: over a limit")}


class ImportReportSerializer(serializers.Serializer):
    class DuplicateSerializer(serializers.Serializer):
        file = serializers.CharField(help_text="The file's name as imported.")
        sha256 = serializers.CharField(help_text="Content hash already in the project (or earlier in this import).")

        class Meta:
            ref_name = "ImportDuplicate"

    class RejectedSerializer(serializers.Serializer):
        file = serializers.CharField(help_text="The file's name as imported.")
        reason = serializers.CharField(help_text="Why it was refused, for people.")
        code = serializers.CharField(
            help_text="Why it was refused, for programs: not_image, unsupported_format, corrupt, decompression_bomb, "
            "file_too_large, unsafe_path, symlink, unreadable, path_not_allowed, not_found, url_not_allowed, "
            "address_not_allowed, fetch_failed."
        )

        class Meta:
            ref_name = "ImportRejected"

    imported = serializers.IntegerField(help_text="Items created.")
    duplicates = DuplicateSerializer(many=True, help_text="Files skipped: their content is already in the project.")
    rejected = RejectedSerializer(many=True, help_text="Files refused, with the reason.")

    class Meta:
        ref_name = "ImportReport"


class ImportJobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ImportJob.Status.choices)
    source = serializers.CharField(help_text="What is imported (zip name, files, references).")
    total = serializers.IntegerField(help_text="Files to look at (0 until known).")
    processed = serializers.IntegerField(help_text="Files looked at so far.")
    report = serializers.SerializerMethodField(help_text="The import report once the job has finished, else null.")
    error = serializers.CharField(help_text="Why the job failed, if it did.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField(help_text="Where to poll this job.")

    class Meta:
        ref_name = "ImportJob"

    def get_url(self, job: ImportJob) -> str:
        return reverse("import-job-detail", kwargs={"job_id": job.pk})

    @extend_schema_field(ImportReportSerializer(allow_null=True))
    def get_report(self, job: ImportJob) -> dict[str, Any] | None:
        return ImportReportSerializer(job.report).data if job.report else None


class ItemOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    original_name = serializers.CharField(help_text="File name as imported (display only).")
    sha256 = serializers.CharField(help_text="Content hash (unique in the project).")
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    mode = serializers.CharField(help_text="Pillow image mode, e.g. L, RGB, I;16.")
    metadata = serializers.JSONField(help_text="Metadata given at import.")
    split = serializers.ChoiceField(choices=Item.Split.choices)
    status = serializers.ChoiceField(choices=Item.Status.choices)
    priority = serializers.FloatField(help_text="Queue order: higher is served first.")
    wanted = serializers.IntegerField(help_text="Annotations wanted.")
    annotation_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    image_url = serializers.SerializerMethodField(help_text="The image (members only; session or token).")
    thumbnail_url = serializers.SerializerMethodField(help_text="WebP thumbnail (members only), null if none.")

    class Meta:
        ref_name = "Item"

    def get_image_url(self, item: Item) -> str:
        return reverse("item-image", kwargs={"item_id": item.pk})

    def get_thumbnail_url(self, item: Item) -> str | None:
        return reverse("item-thumbnail", kwargs={"item_id": item.pk}) if item.thumbnail else None


class ItemCollectionApi(APIView):
    """GET: the project's items (paginated, filters). POST: import images into the project."""

    pagination_class = ApiPagination
    parser_classes = [MultiPartParser, JSONParser]

    class FilterSerializer(serializers.Serializer):
        split = serializers.ChoiceField(choices=Item.Split.choices, required=False, help_text="train or evaluation")
        status = serializers.ChoiceField(choices=Item.Status.choices, required=False)

    class MultipartInputSerializer(serializers.Serializer):
        files = serializers.ListField(
            child=serializers.FileField(allow_empty_file=True),
            required=False,
            allow_empty=False,
            help_text="One or more image files (repeat the `files` part).",
        )
        zip = serializers.FileField(required=False, help_text="A zip of images (folders allowed).")

        class Meta:
            ref_name = "ItemImportMultipartInput"

    class ReferencesInputSerializer(serializers.Serializer):
        class ReferenceSerializer(serializers.Serializer):
            path = serializers.CharField(
                max_length=4096, help_text="Absolute server path (file or folder) under one of IMPORT_ROOTS."
            )
            metadata = serializers.JSONField(
                required=False, help_text=f"A JSON object stored with each item (at most {METADATA_MAX_BYTES} bytes)."
            )

            class Meta:
                ref_name = "ItemImportReference"

            def validate_metadata(self, value: Any) -> dict[str, Any]:
                try:
                    return metadata_check(value)
                except ValueError as exc:
                    raise serializers.ValidationError(str(exc))

        references = ReferenceSerializer(
            many=True, required=False, allow_empty=False, help_text="Server paths to import."
        )
        urls = serializers.ListField(
            child=serializers.CharField(max_length=4096, trim_whitespace=True),
            required=False,
            allow_empty=False,
            help_text="http(s) URLs the server fetches (SSRF-guarded: public addresses only unless "
            "IMPORT_URL_ALLOWED_NETWORKS allows more). Each is reported like a file.",
        )

        class Meta:
            ref_name = "ItemImportReferencesInput"

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("references" in attrs) == ("urls" in attrs):
                raise serializers.ValidationError("Send exactly one of: references, urls.")
            return attrs

    @extend_schema(
        operation_id="item_list",
        parameters=[FilterSerializer],
        responses={200: ItemOutputSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]},
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=REVIEW)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        items = item_list(project=project, **filters.validated_data)
        return paginated_response(request=request, view=self, queryset=items, serializer_class=ItemOutputSerializer)

    @extend_schema(
        operation_id="item_import",
        request={
            "multipart/form-data": MultipartInputSerializer,
            "application/json": ReferencesInputSerializer,
        },
        responses={
            201: ImportReportSerializer,
            202: ImportJobOutputSerializer,
            **ERRORS,
            **TOO_LARGE,
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        if request.content_type.startswith("multipart/"):
            payload = self.MultipartInputSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            data = payload.validated_data
            result = items_import_request(
                project=project, actor=request.user, files=data.get("files"), zip_file=data.get("zip")
            )
        else:
            payload = self.ReferencesInputSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            data = payload.validated_data
            if "urls" in data:
                result = items_import_request(project=project, actor=request.user, urls=list(data["urls"]))
            else:
                result = items_import_request(
                    project=project, actor=request.user, references=[dict(r) for r in data["references"]]
                )
        if isinstance(result, ImportReport):
            return Response(ImportReportSerializer(result.as_dict()).data, status=status.HTTP_201_CREATED)
        return Response(ImportJobOutputSerializer(result).data, status=status.HTTP_202_ACCEPTED)


class ItemDetailApi(APIView):
    """GET one item (managers and reviewers)."""

    @extend_schema(operation_id="item_get", responses={200: ItemOutputSerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, project_id: int, item_id: int) -> Response:
        item = item_access(item_id=item_id, project_id=project_id, user=request.user, roles=REVIEW)
        return Response(ItemOutputSerializer(item).data)


class ImportJobDetailApi(APIView):
    """GET an import job: status, progress and, once finished, the report (managers)."""

    @extend_schema(operation_id="import_job_get", responses={200: ImportJobOutputSerializer, 404: ERRORS[404]})
    def get(self, request: Request, job_id: int) -> Response:
        job = import_job_get(job_id=job_id, user=request.user)
        return Response(ImportJobOutputSerializer(job).data)


urlpatterns = [
    path("projects/<int:project_id>/items/", ItemCollectionApi.as_view(), name="item-collection"),
    path("projects/<int:project_id>/items/<int:item_id>/", ItemDetailApi.as_view(), name="item-detail"),
    path("import-jobs/<int:job_id>/", ImportJobDetailApi.as_view(), name="import-job-detail"),
]
