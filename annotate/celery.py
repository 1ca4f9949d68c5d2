"""The Celery app. Broker and mode come from settings (env-driven), chosen once at start-up."""

import os
from pathlib import Path

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")

app = Celery("annotate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["mltasks", "labeling"])


def broker_folders_ensure() -> None:
    """Create the embedded file broker's folders (no-op for any other broker).

    kombu's filesystem transport lists its folders on the first publish and fails when they are
    missing, so every process that may publish (web, worker, management commands such as
    seed_demo) creates them before it connects.
    """
    if not str(app.conf.broker_url or "").startswith("filesystem://"):
        return
    options = app.conf.broker_transport_options or {}
    keys = ("data_folder_in", "data_folder_out", "control_folder", "processed_folder")
    folders = tuple(options[key] for key in keys if options.get(key))
    if folders in _folders_made:  # publishing is frequent: the mkdirs run once per process and layout
        return
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
    _folders_made.add(folders)


_folders_made: set[tuple[str, ...]] = set()


@signals.import_modules.connect
def _broker_folders_on_start(sender: object = None, **kwargs: object) -> None:
    broker_folders_ensure()


@signals.before_task_publish.connect
def _broker_folders_before_publish(sender: object = None, **kwargs: object) -> None:
    broker_folders_ensure()
