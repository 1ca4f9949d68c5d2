"""API: ML jobs (embed, train, score), their progress, and model versions (the learning curve).

Long work never runs in a request: ``POST .../train/`` and ``POST .../embed/`` create (or
return the equal, already queued) MLJob and answer 202; the client polls
``GET /jobs/{id}/`` for ``status``, ``progress`` and ``message``. Access: any member may
read jobs and models; only managers may start jobs (others 403 ``role_required``,
non-members 404).
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.projects import ERRORS, ApiPagination, paginated_response
from labeling.selectors.access import ANNOTATE, MANAGE, project_access
from labeling.selectors.ml import ml_job_get, ml_job_list, model_version_list
from labeling.services.ml_jobs import embedding_request, training_request


class MlJobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    kind = serializers.CharField(help_text="embed | train | score")
    status = serializers.CharField(help_text="pending | running | succeeded | failed")
    progress = serializers.FloatField(help_text="0..1, updated while the job runs.")
    message = serializers.CharField(help_text="What the job is doing now, or how it ended.")
    attempt = serializers.IntegerField(help_text="How many times a worker claimed it.")
    result = serializers.JSONField(help_text="Summary written on success (e.g. model_version, n_train).")
    error_code = serializers.CharField(help_text="Stable code of a failure ('' unless failed).")
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    enqueued_at = serializers.DateTimeField(allow_null=True, help_text="Null while the broker could not take it.")
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    backbone = serializers.CharField()
    head = serializers.CharField()
    class_ids = serializers.ListField(child=serializers.IntegerField(), help_text="Output index -> LabelClass id.")
    n_train = serializers.IntegerField(help_text="Labels it was trained on (training split only).")
    cost_at_training = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Money spent so far.")
    metrics = serializers.JSONField(
        help_text="On the evaluation set: n, accuracy, balanced_accuracy, macro_f1, per_class_recall, ece, confusion."
    )
    is_active = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_is_active(self, obj) -> bool:  # type: ignore[no-untyped-def]
        return obj.pk == self.context.get("active_model_id")


JOB_202 = {202: MlJobOutputSerializer}


class ProjectTrainApi(APIView):
    @extend_schema(
        summary="Queue a retrain now (managers)",
        request=None,
        responses={
            **JOB_202,
            **ERRORS,
            422: OpenApiResponse(description="not_enough_labels: fewer than 2 labeled training items"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        job = training_request(project=project, actor=request.user)
        return Response(MlJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ProjectEmbedApi(APIView):
    @extend_schema(
        summary="Queue embedding of items not embedded yet (managers)", request=None, responses={**JOB_202, **ERRORS}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        job = embedding_request(project=project, actor=request.user)
        return Response(MlJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class MlJobListApi(APIView):
    pagination_class = ApiPagination

    @extend_schema(
        summary="The project's ML jobs, newest first", responses={200: MlJobOutputSerializer(many=True), **ERRORS}
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        return paginated_response(
            request=request,
            view=self,
            queryset=ml_job_list(project_id=project.pk),
            serializer_class=MlJobOutputSerializer,
        )


class MlJobDetailApi(APIView):
    @extend_schema(
        summary="One ML job: status, progress, message, error", responses={200: MlJobOutputSerializer, **ERRORS}
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = ml_job_get(job_id=job_id, user=request.user)
        return Response(MlJobOutputSerializer(job).data)


class ModelVersionListApi(APIView):
    pagination_class = ApiPagination

    @extend_schema(
        summary="Model versions with evaluation metrics (the learning curve), oldest first",
        responses={200: ModelVersionOutputSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(model_version_list(project_id=project.pk), request, view=self)
        data = ModelVersionOutputSerializer(page, many=True, context={"active_model_id": project.active_model_id}).data
        return paginator.get_paginated_response(data)


urlpatterns = [
    path("projects/<int:project_id>/train/", ProjectTrainApi.as_view(), name="api-project-train"),
    path("projects/<int:project_id>/embed/", ProjectEmbedApi.as_view(), name="api-project-embed"),
    path("projects/<int:project_id>/jobs/", MlJobListApi.as_view(), name="api-project-jobs"),
    path("projects/<int:project_id>/models/", ModelVersionListApi.as_view(), name="api-project-models"),
    path("jobs/<int:job_id>/", MlJobDetailApi.as_view(), name="api-job-detail"),
]
