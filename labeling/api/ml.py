"""API: model versions, ML jobs, retraining."""

urlpatterns: list = []
