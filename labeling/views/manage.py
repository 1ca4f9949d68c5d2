"""Browser pages for project managers: create a project, import images, export the dataset.

``/projects/new/`` is a plain Django form that calls ``labeling.services.projects.project_create``.
``/projects/<id>/manage/`` renders the project's figures, its recent import jobs, an upload
form and the export links; ``static/labeling/manage.js`` sends the upload to the import API
(``POST /api/v1/projects/<id>/items/``) and polls the import job it may answer with.

Access (as everywhere): the manage page needs ``manager``; another role gets 403, a
non-member 404. Creating a project needs only a signed-in user, unless
``PROJECT_CREATE_REQUIRES_STAFF`` is set (the service decides; the page shows its refusal).
"""

from __future__ import annotations

import string
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from labeling.errors import PermissionDeniedError
from labeling.models import ImportJob, Item, Project
from labeling.selectors.access import MANAGE
from labeling.services.projects import project_create
from labeling.views import page_project_access

EXPORT_FORMATS = (("json", "JSON"), ("jsonl", "JSON Lines"), ("csv", "CSV"))
RECENT_IMPORT_JOBS = 5
MAX_CLASSES = 200


def parse_class_lines(text: str) -> list[dict[str, str]]:
    """Classes from a textarea, one per line: ``name`` or ``name, key``.

    The part after the last comma is the shortcut when it is a single character; blank lines
    are ignored. A class without a key gets the next free digit 1-9 (then none), so a new
    project can be labeled with the keyboard alone. Raises ValidationError on a bad line.
    """
    classes: list[dict[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, shortcut = line, ""
        if "," in line:
            head, _, tail = line.rpartition(",")
            if len(tail.strip()) == 1:
                name, shortcut = head.strip(), tail.strip()
            elif not tail.strip():
                name = head.strip()
        if not name:
            raise ValidationError(f"Line {number}: a class needs a name.")
        if len(name) > 100:
            raise ValidationError(f"Line {number}: a class name has at most 100 characters.")
        classes.append({"name": name, "shortcut": shortcut})
    if len(classes) > MAX_CLASSES:
        raise ValidationError(f"At most {MAX_CLASSES} classes.")
    taken = {c["shortcut"].lower() for c in classes if c["shortcut"]}
    free = [d for d in string.digits[1:] if d not in taken]
    for c in classes:
        if not c["shortcut"] and free:
            c["shortcut"] = free.pop(0)
    return classes


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text="Labeling guidelines, shown to annotators."
    )
    classes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "cat, 1\ndog, 2\nbird"}),
        help_text="One class per line, optionally followed by a comma and its shortcut key. "
        "A class without a key gets the next free digit.",
    )
    overlap = forms.IntegerField(
        min_value=1, max_value=100, initial=1, help_text="Annotators per item (3 for a radiology panel)."
    )
    eval_fraction = forms.FloatField(
        min_value=0.0,
        max_value=0.99,
        initial=0.1,
        label="Evaluation fraction",
        help_text="Share of imported items held out to measure the model (0 to 0.99).",
    )

    def clean_classes(self) -> list[dict[str, str]]:
        return parse_class_lines(self.cleaned_data["classes"])


def _manager_project(request: HttpRequest, project_id: int) -> Project:
    project, _ = page_project_access(request, project_id, roles=MANAGE)
    return project


def _add_service_errors(form: ProjectCreateForm, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, [str(e) for e in errors])


@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    if getattr(settings, "PROJECT_CREATE_REQUIRES_STAFF", False) and not request.user.is_staff:
        raise PermissionDenied("Only staff users may create projects.")
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            project = project_create(
                actor=request.user,
                name=data["name"].strip(),
                classes=data["classes"],
                instructions=data["instructions"],
                overlap=data["overlap"],
                eval_fraction=data["eval_fraction"],
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        except PermissionDeniedError as exc:
            raise PermissionDenied(exc.message)
        else:
            return HttpResponseRedirect(reverse("project-manage", args=[project.pk]))
    return render(request, "labeling/project_new.html", {"form": form}, status=400 if form.errors else 200)


def _item_counts(project: Project) -> dict[str, Any]:
    rows = Item.objects.filter(project=project).order_by().values("status").annotate(n=Count("*"))
    by_status = {r["status"]: r["n"] for r in rows}
    total = sum(by_status.values())
    done = by_status.get(Item.Status.DONE, 0) + by_status.get(Item.Status.REVIEWED, 0)
    return {
        "total": total,
        "done": done,
        "percent_done": round(100 * done / total) if total else 0,
        "by_status": [(value, label, by_status.get(value, 0)) for value, label in Item.Status.choices],
    }


@login_required
def project_manage(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _manager_project(request, project_id)
    export_url = reverse("api-project-export", args=[project.pk])
    jobs = list(ImportJob.objects.filter(project=project).order_by("-created_at", "-id")[:RECENT_IMPORT_JOBS])
    return render(
        request,
        "labeling/project_manage.html",
        {
            "project": project,
            "classes": list(project.classes.all()),
            "counts": _item_counts(project),
            "jobs": jobs,
            "exports": [(fmt, label, f"{export_url}?format={fmt}") for fmt, label in EXPORT_FORMATS],
            "config": {
                "importUrl": reverse("item-collection", args=[project.pk]),
                "pollMs": 1000,
            },
        },
    )


urlpatterns = [
    path("projects/new/", project_new, name="project-new"),
    path("projects/<int:project_id>/manage/", project_manage, name="project-manage"),
]
