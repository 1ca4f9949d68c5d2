"""/api/v1/ routes. Each resource module owns its routes; one APIView per operation."""

from django.urls import include, path

urlpatterns = [
    path("", include("labeling.api.projects")),
    path("", include("labeling.api.auth")),
    path("", include("labeling.api.items")),
    path("", include("labeling.api.queue")),
    path("", include("labeling.api.exports")),
    path("", include("labeling.api.ml")),
    path("", include("labeling.api.dashboard")),
    path("", include("labeling.api.review")),
]
