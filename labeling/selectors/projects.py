"""Reads for projects, their classes and their members.

Access is checked by the caller through ``labeling.selectors.access.project_access``;
these selectors only scope rows to a project, so a class or membership id that belongs to
another project is "not found" (404), never "forbidden".
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, QuerySet, Subquery

from labeling.errors import NotFoundError
from labeling.models import LabelClass, Membership, Project


def project_list_for_member(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """The projects ``user`` is a member of, newest first (stable order for pagination)."""
    my_role = Membership.objects.filter(project=OuterRef("pk"), user_id=user.pk).values("role")[:1]
    return (
        Project.objects.filter(memberships__user_id=user.pk)
        .annotate(my_role=Subquery(my_role))
        .prefetch_related("classes")
        .order_by("-created_at", "-id")
    )


def project_get_with_classes(*, project_id: int) -> Project:
    project = Project.objects.prefetch_related("classes").filter(pk=project_id).first()
    if project is None:
        raise NotFoundError("Project not found.")
    return project


def label_class_list(*, project: Project) -> QuerySet[LabelClass]:
    return LabelClass.objects.filter(project=project).order_by("order", "id")


def label_class_get(*, project: Project, class_id: int) -> LabelClass:
    """The class ``class_id`` of ``project``; NotFoundError when it belongs to another project."""
    label_class = LabelClass.objects.filter(project=project, pk=class_id).first()
    if label_class is None:
        raise NotFoundError("Class not found.")
    return label_class


def membership_list(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("id")


def membership_get_in_project(*, project: Project, membership_id: int) -> Membership:
    """The membership ``membership_id`` of ``project``; NotFoundError when it is another project's."""
    membership = Membership.objects.select_related("user").filter(project=project, pk=membership_id).first()
    if membership is None:
        raise NotFoundError("Member not found.")
    return membership
