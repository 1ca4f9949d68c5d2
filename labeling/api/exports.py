"""API: exports."""

urlpatterns: list = []
