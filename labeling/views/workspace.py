"""Browser pages: sign-in, "My projects" and the annotator workspace.

These views are interfaces (STYLE B1): they check access through
``labeling.selectors.access`` and render. The workspace page only renders the frame and
the project's classes; every item, lease and annotation then goes through the JSON API
(``/api/v1/``), called by ``static/labeling/workspace.js``.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie

from labeling.models import Annotation, Item, Membership
from labeling.selectors.access import ANNOTATE
from labeling.services.auth import LoginThrottledError, login_authenticate
from labeling.views import page_project_access

# Items whose labeling is finished: annotated to the wanted overlap, or settled by a reviewer.
DONE_STATUSES = (Item.Status.DONE, Item.Status.REVIEWED)
# Keys of the built-in commands. A class shortcut wins over a built-in letter: the command
# then keeps only its other binding (Enter, Ctrl+Z, the buttons), so MNIST-style digit
# classes 0-9 or a class on "s" stay labelable with one key.
BUILTIN_KEYS = {
    "accept": "a",
    "skip": "s",
    "undo": "u",
    "help": "?",
    "zoom_in": "+",
    "zoom_out": "-",
    "contrast": "c",
    "reset_view": "0",
}
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_DEFAULT_COLOR = "#4e79a7"


def _count_subquery(queryset: QuerySet[Any], group_by: str) -> Coalesce:
    """``COUNT(*)`` of ``queryset`` grouped by ``group_by``, as a correlated subquery.

    One subquery per figure keeps the home page to a single SQL statement whatever the
    number of projects, and avoids the row multiplication of counting across two joins.
    """
    counted = queryset.order_by().values(group_by).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def workspace_keys(shortcuts: list[str]) -> dict[str, str]:
    """Built-in command -> key, leaving out the keys that a class shortcut takes."""
    taken = {s.lower() for s in shortcuts if s}
    if "+" in taken or "=" in taken:  # "=" is "+" without Shift on most layouts
        taken |= {"+", "="}
    return {command: key for command, key in BUILTIN_KEYS.items() if key.lower() not in taken}


def membership_list_with_progress(*, user: Any) -> list[Membership]:
    """The user's memberships with ``items_total``, ``items_done`` and ``my_annotations``."""
    project_ref = OuterRef("project_id")
    return list(
        Membership.objects.filter(user_id=user.pk)
        .select_related("project")
        .annotate(
            items_total=_count_subquery(Item.objects.filter(project_id=project_ref), "project_id"),
            items_done=_count_subquery(
                Item.objects.filter(project_id=project_ref, status__in=DONE_STATUSES), "project_id"
            ),
            my_annotations=_count_subquery(
                Annotation.objects.filter(
                    item__project_id=project_ref, annotator_id=user.pk, retracted_at__isnull=True
                ),
                "annotator_id",
            ),
        )
        .order_by("-project__created_at", "project_id")
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = membership_list_with_progress(user=request.user)
    can_label = set(ANNOTATE)
    rows = [
        {
            "membership": m,
            "project": m.project,
            "percent_done": round(100 * m.items_done / m.items_total) if m.items_total else 0,
            "can_label": m.role in can_label,
            "is_manager": m.role == Membership.Role.MANAGER,
        }
        for m in memberships
    ]
    return render(request, "labeling/home.html", {"rows": rows})


@login_required
@ensure_csrf_cookie  # workspace.js reads the cookie to send X-CSRFToken on every POST
def workspace(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = page_project_access(request, project_id, roles=ANNOTATE)
    classes = [
        {
            "id": c.pk,
            "name": c.name,
            "shortcut": c.shortcut,
            # Colors go into a style attribute: accept only #rrggbb, so no CSS can be injected.
            "color": c.color if _COLOR.match(c.color or "") else _DEFAULT_COLOR,
        }
        for c in project.classes.all()  # Meta.ordering: order, id
    ]
    keys = workspace_keys([c["shortcut"] for c in classes])
    # Everything the script needs, rendered with json_script: user-controlled text (class
    # names, the project name) never lands inside JavaScript source.
    config = {
        "projectId": project.pk,
        "userId": request.user.pk,
        "apiRoot": "/api/v1/",
        "csrfCookieName": settings.CSRF_COOKIE_NAME,
        # The page only greys out the undo button with it; the undo API has the last word.
        "undoWindowSeconds": getattr(settings, "UNDO_WINDOW_SECONDS", 120),
        "showSuggestions": project.show_suggestions,
        "classes": classes,
        "keys": keys,
    }
    context = {
        "project": project,
        "membership": membership,
        "classes": classes,
        "keys": keys,
        "config": config,
        "idle_seconds": getattr(settings, "WORKSPACE_IDLE_SECONDS", 30),
    }
    return render(request, "labeling/workspace.html", context)


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, with the password checked behind the brute-force throttle."""

    throttled = False

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = login_authenticate(request=self.request, username=username, password=password)
            except LoginThrottledError as exc:
                self.throttled = True
                raise ValidationError(exc.message, code="login_throttled")
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True
    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        if getattr(form, "throttled", False):
            response.status_code = 429
        return response


urlpatterns = [
    path("", home, name="home"),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("projects/<int:project_id>/label/", workspace, name="workspace"),
]
