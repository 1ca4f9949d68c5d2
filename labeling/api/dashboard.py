"""API: the manager dashboard."""

urlpatterns: list = []
