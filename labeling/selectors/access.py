"""Permission-checked reads (Zulip's ``access_*`` idea): they raise, never return None.

The rule: a user who is not a member of a project gets 404 for the project and for
everything in it (its existence is not revealed); a member whose role is not enough for
an operation gets 403.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from labeling.errors import NotFoundError, PermissionDeniedError
from labeling.models import Item, Membership, Project

Role = Membership.Role
MANAGE = (Role.MANAGER,)
ANNOTATE = (Role.MANAGER, Role.ANNOTATOR, Role.REVIEWER)
REVIEW = (Role.MANAGER, Role.REVIEWER)


def membership_get(*, project_id: int, user: AbstractBaseUser | AnonymousUser) -> Membership:
    """The caller's membership of the project; NotFoundError when there is none."""
    if not user.is_authenticated:
        raise NotFoundError("Project not found.")
    membership = Membership.objects.select_related("project").filter(project_id=project_id, user_id=user.pk).first()
    if membership is None:
        raise NotFoundError("Project not found.")
    return membership


def project_access(
    *, project_id: int, user: AbstractBaseUser | AnonymousUser, roles: Iterable[str] = ANNOTATE
) -> tuple[Project, Membership]:
    """The project, if the user is a member with one of ``roles``.

    Raises NotFoundError for non-members, PermissionDeniedError for a role that is not enough.
    """
    membership = membership_get(project_id=project_id, user=user)
    if membership.role not in tuple(roles):
        raise PermissionDeniedError("Your role in this project does not allow this.", code="role_required")
    return membership.project, membership


def item_access(
    *,
    item_id: int,
    user: AbstractBaseUser | AnonymousUser,
    project_id: int | None = None,
    roles: Iterable[str] = ANNOTATE,
) -> Item:
    """The item, if the user may see its project (and it belongs to ``project_id`` when given)."""
    item = Item.objects.filter(pk=item_id).only("id", "project_id").first()
    if item is None or (project_id is not None and item.project_id != project_id):
        raise NotFoundError("Item not found.")
    try:
        project_access(project_id=item.project_id, user=user, roles=roles)
    except NotFoundError:
        raise NotFoundError("Item not found.")
    return Item.objects.get(pk=item_id)


def project_list_for_user(*, user: AbstractBaseUser) -> list[Membership]:
    return list(Membership.objects.filter(user_id=user.pk).select_related("project").order_by("-project__created_at"))
