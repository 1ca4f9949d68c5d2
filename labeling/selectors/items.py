"""Reads for items and import jobs, permission-checked through labeling.selectors.access."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from labeling.errors import NotFoundError
from labeling.models import ImportJob, Item, Project
from labeling.selectors.access import MANAGE, project_access


def item_list(*, project: Project, split: str | None = None, status: str | None = None) -> QuerySet[Item]:
    """The project's items, oldest first, optionally filtered by split and status."""
    qs = Item.objects.filter(project=project)
    if split:
        qs = qs.filter(split=split)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("id")


def import_job_get(*, job_id: int, user: AbstractBaseUser | AnonymousUser) -> ImportJob:
    """An import job, for a manager of its project. NotFoundError for anyone who is not a member."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFoundError("Import job not found.")
    try:
        project_access(project_id=job.project_id, user=user, roles=MANAGE)
    except NotFoundError:
        raise NotFoundError("Import job not found.")
    return job
