"""Browser pages. Each views module owns its routes."""

from django.urls import include, path

urlpatterns = [
    path("", include("labeling.views.workspace")),
    path("", include("labeling.views.media")),
    path("", include("labeling.views.dashboard")),
    path("", include("labeling.views.manage")),
    path("", include("labeling.views.health")),
]
