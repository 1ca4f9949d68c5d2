from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    """An API URL that matches no route (``/api/v1/projects/abc/``) answers in the API's error
    envelope, as every other API error does; pages keep Django's HTML 404."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": "Not found.", "extra": {}}, status=404)
    return defaults.page_not_found(request, exception)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("labeling.api.urls")),
    path("", include("labeling.urls")),
]
