"""API: projects, their label classes and their members (plus the token routes of api/auth.py).

Access rule, the same for every route here: a user who is not a member of the project
gets 404 for the project and everything in it; a member whose role is not enough gets
403 with ``code: role_required``. Reading a project and its classes needs any role;
changing them, and anything about members (their rates), needs ``manager``.

DRF routes by path, so each path has one view class whose methods are one operation
each: parse, call one service or selector, serialize.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.auth import AuthTokenApi
from labeling.models import Membership, Project
from labeling.selectors.access import ANNOTATE, MANAGE, project_access
from labeling.selectors.projects import (
    label_class_get,
    label_class_list,
    membership_get_in_project,
    membership_list,
    project_get_with_classes,
    project_list_for_member,
)
from labeling.services.projects import (
    label_class_create,
    label_class_delete,
    label_class_update,
    membership_create,
    membership_delete,
    membership_update,
    project_create,
    project_delete,
    project_update,
)

ERRORS = {
    400: OpenApiResponse(description="validation_error: `extra.fields` names the fields"),
    403: OpenApiResponse(description="role_required: your role in this project is not enough"),
    404: OpenApiResponse(description="not_found: no such project, or you are not a member"),
}
CONFLICT = {409: OpenApiResponse(description="A conflict with the current state; `code` says which")}


class ApiPagination(LimitOffsetPagination):
    """``?limit=&offset=``; every list is paginated."""

    max_limit = 1000


def paginated_response(
    *, request: Request, view: APIView, queryset: QuerySet[Any], serializer_class: type[serializers.Serializer]
) -> Response:
    paginator = ApiPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


# --- shared output shapes -------------------------------------------------------------


class LabelClassOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(help_text="Class name, unique in the project.")
    shortcut = serializers.CharField(help_text="Keyboard key that picks this class ('' for none).")
    color = serializers.CharField(help_text="#rrggbb")
    order = serializers.IntegerField(help_text="Display order (ascending).")

    class Meta:
        ref_name = "LabelClass"


class LabelClassInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Class name, unique in the project.")
    shortcut = serializers.CharField(
        max_length=1, required=False, allow_blank=True, help_text="One keyboard key; unique in the project."
    )
    color = serializers.CharField(max_length=7, required=False, help_text="#rrggbb (default #4e79a7).")
    order = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, help_text="Display order; default: after the last."
    )

    class Meta:
        ref_name = "LabelClassInput"


class ProjectOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    instructions = serializers.CharField(help_text="Labeling guidelines, plain text.")
    task_type = serializers.CharField()
    overlap = serializers.IntegerField(help_text="Annotations wanted per item.")
    max_overlap = serializers.IntegerField(help_text="Most annotations an item may get (adaptive overlap).")
    consensus_threshold = serializers.FloatField(help_text="Adaptive overlap: confidence below this adds a reader.")
    lease_minutes = serializers.IntegerField(help_text="How long a leased item stays reserved.")
    eval_fraction = serializers.FloatField(help_text="Fraction of imported items reserved as the evaluation set.")
    eval_rate = serializers.FloatField(help_text="Share of queue pulls that serve an evaluation-set item.")
    gold_rate = serializers.FloatField(help_text="Share of queue pulls that serve a gold item.")
    show_suggestions = serializers.BooleanField(help_text="Show the model's suggestion to annotators.")
    strategy = serializers.ChoiceField(choices=Project.Strategy.choices, help_text="Active-learning query strategy.")
    retrain_every = serializers.IntegerField(help_text="Retrain after this many new consensus labels.")
    backbone = serializers.CharField(help_text="Feature backbone; blank = the server default.")
    created_at = serializers.DateTimeField()
    role = serializers.CharField(source="my_role", help_text="The caller's role in this project.")
    classes = LabelClassOutputSerializer(many=True, source="classes.all")

    class Meta:
        ref_name = "Project"


class _ProjectSettingsSerializer(serializers.Serializer):
    """Project settings shared by create and update; omitted fields keep their defaults."""

    name = serializers.CharField(max_length=200, help_text="Shown to annotators and managers.")
    instructions = serializers.CharField(required=False, allow_blank=True, help_text="Labeling guidelines.")
    overlap = serializers.IntegerField(required=False, min_value=1, max_value=100, help_text="Default 1.")
    max_overlap = serializers.IntegerField(
        required=False, min_value=1, max_value=100, help_text="At least overlap; default: overlap."
    )
    consensus_threshold = serializers.FloatField(required=False, min_value=0, max_value=1)
    lease_minutes = serializers.IntegerField(required=False, min_value=1, max_value=24 * 60, help_text="Default 10.")
    eval_fraction = serializers.FloatField(required=False, help_text="0 <= eval_fraction < 1; default 0.1.")
    eval_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    gold_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    show_suggestions = serializers.BooleanField(required=False)
    strategy = serializers.ChoiceField(choices=Project.Strategy.choices, required=False, help_text="Default hybrid.")
    retrain_every = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    backbone = serializers.CharField(required=False, allow_blank=True, max_length=100)


# --- projects -------------------------------------------------------------------------


class ProjectCollectionApi(APIView):
    """GET: the caller's projects (paginated). POST: create a project; the caller becomes its manager."""

    pagination_class = ApiPagination

    class CreateInputSerializer(_ProjectSettingsSerializer):
        classes = LabelClassInputSerializer(many=True, help_text="At least two; names and shortcuts unique.")

        class Meta:
            ref_name = "ProjectCreateInput"

    @extend_schema(operation_id="project_list", responses={200: ProjectOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        projects = project_list_for_member(user=request.user)
        return paginated_response(
            request=request, view=self, queryset=projects, serializer_class=ProjectOutputSerializer
        )

    @extend_schema(
        operation_id="project_create",
        request=CreateInputSerializer,
        responses={201: ProjectOutputSerializer, 400: ERRORS[400], 403: ERRORS[403]},
    )
    def post(self, request: Request) -> Response:
        payload = self.CreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        classes = [dict(c) for c in data.pop("classes")]
        project = project_create(actor=request.user, name=data.pop("name"), classes=classes, **data)
        project = project_get_with_classes(project_id=project.pk)
        project.my_role = Membership.Role.MANAGER
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    """GET (members), PATCH and DELETE (managers) one project."""

    class UpdateInputSerializer(_ProjectSettingsSerializer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, partial=True, **kwargs)

        class Meta:
            ref_name = "ProjectUpdateInput"

    @extend_schema(operation_id="project_get", responses={200: ProjectOutputSerializer, 404: ERRORS[404]})
    def get(self, request: Request, project_id: int) -> Response:
        _, membership = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        project = project_get_with_classes(project_id=project_id)
        project.my_role = membership.role
        return Response(ProjectOutputSerializer(project).data)

    @extend_schema(
        operation_id="project_update",
        request=UpdateInputSerializer,
        responses={200: ProjectOutputSerializer, **ERRORS},
    )
    def patch(self, request: Request, project_id: int) -> Response:
        project, membership = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        payload = self.UpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        project_update(project=project, actor=request.user, **payload.validated_data)
        project = project_get_with_classes(project_id=project_id)
        project.my_role = membership.role
        return Response(ProjectOutputSerializer(project).data)

    @extend_schema(operation_id="project_delete", responses={204: None, 403: ERRORS[403], 404: ERRORS[404]})
    def delete(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        project_delete(project=project, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- classes --------------------------------------------------------------------------


class LabelClassCollectionApi(APIView):
    """GET: the project's classes (members). POST: add a class (managers; also to a running project)."""

    pagination_class = ApiPagination

    @extend_schema(
        operation_id="label_class_list",
        responses={200: LabelClassOutputSerializer(many=True), 404: ERRORS[404]},
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=ANNOTATE)
        return paginated_response(
            request=request,
            view=self,
            queryset=label_class_list(project=project),
            serializer_class=LabelClassOutputSerializer,
        )

    @extend_schema(
        operation_id="label_class_create",
        request=LabelClassInputSerializer,
        responses={201: LabelClassOutputSerializer, **ERRORS},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        payload = LabelClassInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        label_class = label_class_create(project=project, actor=request.user, **payload.validated_data)
        return Response(LabelClassOutputSerializer(label_class).data, status=status.HTTP_201_CREATED)


class LabelClassDetailApi(APIView):
    """PATCH: rename/recolor/re-key/reorder a class. DELETE: remove an unused class (409 when used)."""

    class UpdateInputSerializer(LabelClassInputSerializer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, partial=True, **kwargs)

        class Meta:
            ref_name = "LabelClassUpdateInput"

    @extend_schema(
        operation_id="label_class_update",
        request=UpdateInputSerializer,
        responses={200: LabelClassOutputSerializer, **ERRORS, **CONFLICT},
    )
    def patch(self, request: Request, project_id: int, class_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        label_class = label_class_get(project=project, class_id=class_id)
        payload = self.UpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        label_class = label_class_update(label_class=label_class, actor=request.user, **payload.validated_data)
        return Response(LabelClassOutputSerializer(label_class).data)

    @extend_schema(
        operation_id="label_class_delete",
        responses={
            204: None,
            403: ERRORS[403],
            404: ERRORS[404],
            409: OpenApiResponse(
                description="class_in_use (annotated, reviewed or gold) or too_few_classes (a project keeps two)"
            ),
        },
    )
    def delete(self, request: Request, project_id: int, class_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        label_class = label_class_get(project=project, class_id=class_id)
        label_class_delete(label_class=label_class, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- members --------------------------------------------------------------------------


class MembershipOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Membership id (use it in /members/{id}/).")
    user_id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Membership.Role.choices)
    hourly_rate = serializers.DecimalField(max_digits=10, decimal_places=2, help_text="Pay per hour of active time.")
    price_per_label = serializers.DecimalField(
        max_digits=10, decimal_places=4, allow_null=True, help_text="If set, pay per annotation instead of per hour."
    )
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Membership"


class MembershipCollectionApi(APIView):
    """GET: the project's members with their rates. POST: add a member. Managers only."""

    pagination_class = ApiPagination

    class CreateInputSerializer(serializers.Serializer):
        username = serializers.CharField(required=False, help_text="The user to add (or give user_id).")
        user_id = serializers.IntegerField(required=False, help_text="The user to add (or give username).")
        role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.ANNOTATOR)
        hourly_rate = serializers.DecimalField(
            max_digits=10, decimal_places=2, min_value=0, required=False, help_text="Pay per hour; default 0."
        )
        price_per_label = serializers.DecimalField(
            max_digits=10,
            decimal_places=4,
            min_value=0,
            required=False,
            allow_null=True,
            help_text="If set, pay per annotation instead of per hour.",
        )

        class Meta:
            ref_name = "MembershipCreateInput"

    @extend_schema(
        operation_id="membership_list",
        responses={200: MembershipOutputSerializer(many=True), 403: ERRORS[403], 404: ERRORS[404]},
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        return paginated_response(
            request=request,
            view=self,
            queryset=membership_list(project=project),
            serializer_class=MembershipOutputSerializer,
        )

    @extend_schema(
        operation_id="membership_create",
        request=CreateInputSerializer,
        responses={201: MembershipOutputSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        payload = self.CreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = membership_create(project=project, actor=request.user, **payload.validated_data)
        return Response(MembershipOutputSerializer(membership).data, status=status.HTTP_201_CREATED)


class MembershipDetailApi(APIView):
    """PATCH: change a member's role or rates. DELETE: remove a member. Managers only; a
    project keeps at least one manager (409 ``last_manager``)."""

    class UpdateInputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=Membership.Role.choices, required=False)
        hourly_rate = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0, required=False)
        price_per_label = serializers.DecimalField(
            max_digits=10, decimal_places=4, min_value=0, required=False, allow_null=True
        )

        class Meta:
            ref_name = "MembershipUpdateInput"

    @extend_schema(
        operation_id="membership_update",
        request=UpdateInputSerializer,
        responses={200: MembershipOutputSerializer, **ERRORS, **CONFLICT},
    )
    def patch(self, request: Request, project_id: int, membership_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        membership = membership_get_in_project(project=project, membership_id=membership_id)
        payload = self.UpdateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = membership_update(membership=membership, actor=request.user, **payload.validated_data)
        return Response(MembershipOutputSerializer(membership).data)

    @extend_schema(
        operation_id="membership_delete",
        responses={204: None, 403: ERRORS[403], 404: ERRORS[404], **CONFLICT},
    )
    def delete(self, request: Request, project_id: int, membership_id: int) -> Response:
        project, _ = project_access(project_id=project_id, user=request.user, roles=MANAGE)
        membership = membership_get_in_project(project=project, membership_id=membership_id)
        membership_delete(membership=membership, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("auth/token/", AuthTokenApi.as_view(), name="api-auth-token"),
    path("projects/", ProjectCollectionApi.as_view(), name="api-projects"),
    path("projects/<int:project_id>/", ProjectDetailApi.as_view(), name="api-project"),
    path("projects/<int:project_id>/classes/", LabelClassCollectionApi.as_view(), name="api-project-classes"),
    path(
        "projects/<int:project_id>/classes/<int:class_id>/",
        LabelClassDetailApi.as_view(),
        name="api-project-class",
    ),
    path("projects/<int:project_id>/members/", MembershipCollectionApi.as_view(), name="api-project-members"),
    path(
        "projects/<int:project_id>/members/<int:membership_id>/",
        MembershipDetailApi.as_view(),
        name="api-project-member",
    ),
]
