"""Browser pages. Shared helpers for the page views live here."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from labeling.errors import NotFoundError, PermissionDeniedError
from labeling.models import Membership, Project
from labeling.selectors.access import project_access


def page_project_access(request: HttpRequest, project_id: int, *, roles: Iterable[str]) -> tuple[Project, Membership]:
    """``project_access`` for a page: not a member -> 404 page, member without the role -> 403 page."""
    try:
        return project_access(project_id=project_id, user=request.user, roles=roles)
    except NotFoundError:
        raise Http404("Project not found.")
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message)
