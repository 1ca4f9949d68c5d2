"""Run the embedded setup: a Celery worker (local file broker, embedded beat) and the web server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start a real Celery worker beside the development web server (make run)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args: Any, addr: str, **options: Any) -> None:
        var = Path(settings.VAR_DIR)
        for sub in ("queue", "control"):
            (Path(settings.CELERY_BROKER_DIR) / sub).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="100000000000")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "annotate",
                "worker",
                "-B",
                "-Q",
                "cpu,gpu",
                "-c",
                "1",
                "-s",
                str(var / "celerybeat-schedule"),
                "-l",
                "info",
            ],
            env=env,
        )

        def _stop(signum: int, frame: object) -> None:
            raise SystemExit(0)  # run the finally below, which stops the worker

        signal.signal(signal.SIGTERM, _stop)
        broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        self.stdout.write(
            self.style.SUCCESS(f"annotate: database={db} broker={broker} worker pid={worker.pid}; open http://{addr}/")
        )
        try:
            call_command("runserver", addr, use_reloader=False)
        finally:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
