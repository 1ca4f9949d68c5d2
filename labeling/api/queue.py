"""API: the annotation queue (next item, submit, skip, release, undo, annotation list).

The browser workspace (static/labeling/workspace.js) is built against exactly these shapes.
Access: any member (annotator, reviewer, manager) may pull from a project's queue; a
non-member gets 404 for the project, and for leases and annotations that are not theirs.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Lease, Project
from labeling.selectors.access import ANNOTATE, project_access
from labeling.selectors.queue import LeasedItem, annotation_list, leased_item_get
from labeling.services.queue import annotation_submit, annotation_undo, lease_next, lease_release, lease_skip

NOT_FOUND = OpenApiResponse(description="not_found: no such project/lease/annotation, or not yours")
CONFLICT = OpenApiResponse(description="A conflict with the lease's state; `code` says which")
INVALID = OpenApiResponse(description="validation_error or invalid_label")


# --- the "leased item" shape, shared by next and undo -----------------------------------


class _LeaseSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="lease_id")
    expires_at = serializers.DateTimeField(help_text="The item is reserved for the caller until then.")

    class Meta:
        ref_name = "QueueLease"


class _ItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="item_id")
    image_url = serializers.CharField(help_text="Full-size image (membership-checked).")
    thumbnail_url = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    original_name = serializers.CharField()
    metadata = serializers.JSONField()

    class Meta:
        ref_name = "QueueItem"


class _SuggestionSerializer(serializers.Serializer):
    label_id = serializers.IntegerField(help_text="The model's suggested class.")
    confidence = serializers.FloatField()

    class Meta:
        ref_name = "QueueSuggestion"


class LeasedItemOutputSerializer(serializers.Serializer):
    lease = _LeaseSerializer(source="*")
    item = _ItemSerializer(source="*")
    suggestion = _SuggestionSerializer(allow_null=True, help_text="null when suggestions are off or none exists.")

    class Meta:
        ref_name = "LeasedItem"


def _leased_item_response(*, lease: Lease, project: Project) -> Response:
    leased: LeasedItem = leased_item_get(lease=lease, project=project)
    return Response(LeasedItemOutputSerializer(leased).data)


class _ExcludeField(serializers.CharField):
    """``1,2``: comma-separated lease ids."""

    def to_internal_value(self, data: object) -> list[int]:  # type: ignore[override]
        raw = super().to_internal_value(data)
        try:
            ids = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise serializers.ValidationError("Comma-separated lease ids expected.")
        if len(ids) > 10:
            raise serializers.ValidationError("At most 10 lease ids.")
        return ids


# --- views --------------------------------------------------------------------------------


class QueueNextApi(APIView):
    class FilterSerializer(serializers.Serializer):
        exclude = _ExcludeField(required=False, allow_blank=True)

    @extend_schema(
        operation_id="queue_next",
        summary="Lease the next item (or resume the one you hold)",
        parameters=[
            OpenApiParameter(
                "exclude",
                OpenApiTypes.STR,
                description="Comma-separated lease ids the client already shows: prefetch another item.",
            )
        ],
        responses={
            200: LeasedItemOutputSerializer,
            204: OpenApiResponse(description="Nothing is left for you in this project."),
            400: INVALID,
            404: NOT_FOUND,
            409: OpenApiResponse(description="too_many_leases: submit, skip or release one first"),
        },
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        lease = lease_next(
            project=project, user=request.user, exclude_lease_ids=params.validated_data.get("exclude", [])
        )
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _leased_item_response(lease=lease, project=project)


class AnnotationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    lease = serializers.IntegerField(source="lease_id")
    item = serializers.IntegerField(source="item_id")
    label = serializers.IntegerField(source="label_id")
    client_id = serializers.UUIDField()
    duration_ms = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Annotation"


class AnnotationSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        lease = serializers.IntegerField(help_text="The lease id from next.")
        label = serializers.IntegerField(help_text="A label class id of the lease's project.")
        client_id = serializers.UUIDField(help_text="Client-generated; a repeat with the same id is idempotent.")
        duration_ms = serializers.IntegerField(min_value=0, max_value=2**31 - 1, help_text="Active time on the item.")
        started_at = serializers.DateTimeField(required=False, allow_null=True, help_text="When the item was shown.")
        suggestion_accepted = serializers.BooleanField(required=False, default=False)

        class Meta:
            ref_name = "AnnotationSubmitInput"

    @extend_schema(
        operation_id="annotation_submit",
        summary="Submit an answer for a lease (idempotent on client_id)",
        request=InputSerializer,
        responses={
            201: AnnotationOutputSerializer,
            200: OpenApiResponse(AnnotationOutputSerializer, description="A repeat: the stored annotation."),
            400: INVALID,
            404: NOT_FOUND,
            409: OpenApiResponse(description="lease_not_open, lease_expired or client_id_conflict"),
        },
    )
    def post(self, request: Request) -> Response:
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        annotation, created = annotation_submit(
            user=request.user,
            lease_id=data["lease"],
            label_id=data["label"],
            client_id=data["client_id"],
            duration_ms=data["duration_ms"],
            started_at=data.get("started_at"),
            suggestion_accepted=data["suggestion_accepted"],
        )
        return Response(
            AnnotationOutputSerializer(annotation).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class LeaseStateOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Lease.State.choices)

    class Meta:
        ref_name = "LeaseState"


class LeaseSkipApi(APIView):
    @extend_schema(
        operation_id="lease_skip",
        summary="Skip the item: you will not be served it again",
        request=None,
        responses={200: LeaseStateOutputSerializer, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        lease = lease_skip(user=request.user, lease_id=lease_id)
        return Response(LeaseStateOutputSerializer(lease).data)


class LeaseReleaseApi(APIView):
    @extend_schema(
        operation_id="lease_release",
        summary="Give the item back without an answer (e.g. the page was closed)",
        request=None,
        responses={200: LeaseStateOutputSerializer, 404: NOT_FOUND, 409: CONFLICT},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        lease = lease_release(user=request.user, lease_id=lease_id)
        return Response(LeaseStateOutputSerializer(lease).data)


class AnnotationUndoApi(APIView):
    @extend_schema(
        operation_id="annotation_undo",
        summary="Undo your latest annotation (within the undo window) and get its item back",
        request=None,
        responses={
            200: LeasedItemOutputSerializer,
            404: NOT_FOUND,
            409: OpenApiResponse(description="undo_window_passed or not_latest"),
        },
    )
    def post(self, request: Request, annotation_id: int) -> Response:
        lease = annotation_undo(user=request.user, annotation_id=annotation_id)
        project = Project.objects.get(pk=lease.project_id)
        return _leased_item_response(lease=lease, project=project)


class AnnotationListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        item = serializers.IntegerField(required=False, help_text="Only this item's annotations.")
        include_retracted = serializers.BooleanField(required=False, default=False)

    class OutputSerializer(AnnotationOutputSerializer):
        annotator = serializers.IntegerField(source="annotator_id")
        started_at = serializers.DateTimeField()
        suggested_label = serializers.IntegerField(source="suggested_label_id", allow_null=True)
        suggestion_accepted = serializers.BooleanField()
        retracted_at = serializers.DateTimeField(allow_null=True)

        class Meta:
            ref_name = "AnnotationListEntry"

    class Pagination(LimitOffsetPagination):
        max_limit = 1000

    pagination_class = Pagination  # so that the schema documents the paginated envelope it returns

    @extend_schema(
        operation_id="annotation_list",
        summary="The project's annotations (annotators: only their own)",
        parameters=[FilterSerializer],
        responses={200: OutputSerializer(many=True), 404: NOT_FOUND},
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, membership = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        qs = annotation_list(
            project=project,
            membership=membership,
            user=request.user,
            item_id=params.validated_data.get("item"),
            include_retracted=params.validated_data["include_retracted"],
        )
        paginator = self.Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


urlpatterns = [
    path("projects/<int:project_id>/next/", QueueNextApi.as_view(), name="queue-next"),
    path("projects/<int:project_id>/annotations/", AnnotationListApi.as_view(), name="annotation-list"),
    path("annotations/", AnnotationSubmitApi.as_view(), name="annotation-submit"),
    path("annotations/<int:annotation_id>/undo/", AnnotationUndoApi.as_view(), name="annotation-undo"),
    path("leases/<int:lease_id>/skip/", LeaseSkipApi.as_view(), name="lease-skip"),
    path("leases/<int:lease_id>/release/", LeaseReleaseApi.as_view(), name="lease-release"),
]
