"""API: projects."""

urlpatterns: list = []
