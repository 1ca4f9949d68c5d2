import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger("annotate")


class LabelingConfig(AppConfig):
    name = "labeling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
        log.debug("annotate mode=%s database=%s broker=%s", settings.ANNOTATE_ENV, db, broker)
        from labeling import queue_tasks  # noqa: F401 - registers the beat task; autodiscovery finds only tasks.py
