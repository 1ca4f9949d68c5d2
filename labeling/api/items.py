"""API: items."""

urlpatterns: list = []
