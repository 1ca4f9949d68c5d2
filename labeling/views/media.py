"""Browser pages: media."""

urlpatterns: list = []
