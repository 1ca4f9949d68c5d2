"""Browser page: the project manager dashboard.

The page renders only the frame; ``static/labeling/dashboard.js`` fetches every figure
from ``/api/v1/projects/<id>/dashboard/`` and draws the charts with the vendored Chart.js.
Managers only: a non-member gets 404, a member with another role 403.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse

from labeling.selectors.access import MANAGE
from labeling.selectors.dashboard import default_target_accuracy, review_assumed_seconds
from labeling.views import page_project_access


@login_required
def dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = page_project_access(request, project_id, roles=MANAGE)
    target = request.GET.get("target_accuracy", "")
    try:
        target_value = float(target) if target else default_target_accuracy()
    except ValueError:
        target_value = default_target_accuracy()
    if not 0.01 <= target_value <= 0.9999:
        target_value = default_target_accuracy()
    api = reverse("api-dashboard", args=[project.pk])
    return render(
        request,
        "labeling/dashboard.html",
        {
            "project": project,
            "target_accuracy": target_value,
            "config": {
                "api": api,
                "jobs_api": reverse("api-dashboard-jobs", args=[project.pk]),
                "target_accuracy": target_value,
                "poll_ms": 5000,
            },
            "spend_csv": reverse("api-dashboard-spend", args=[project.pk]),
            "curve_csv": reverse("api-dashboard-learning-curve", args=[project.pk]),
            "api_url": api,
            "review_assumed_seconds": review_assumed_seconds(),
        },
    )


urlpatterns = [
    path("projects/<int:project_id>/dashboard/", dashboard, name="dashboard"),
]
