"""Browser pages: dashboard."""

urlpatterns: list = []
