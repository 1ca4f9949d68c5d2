"""Browser pages: workspace."""

urlpatterns: list = []
