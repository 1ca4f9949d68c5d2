"""Shared fixtures: private media per test, API clients, real-service markers, a real worker."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
_skipped_for: dict[str, int] = {}


def _has_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith("postgres")


def _browser_missing() -> str | None:
    from tests.browser.support import chromium_missing_reason

    return chromium_missing_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres" in item.keywords and not _has_postgres():
            item.add_marker(pytest.mark.skip(reason="NOT TESTED: needs PostgreSQL (DATABASE_URL)"))
            _skipped_for["PostgreSQL"] = _skipped_for.get("PostgreSQL", 0) + 1
        if "redis" in item.keywords and not os.environ.get("TEST_REDIS_URL"):
            item.add_marker(pytest.mark.skip(reason="NOT TESTED: needs Redis (TEST_REDIS_URL)"))
            _skipped_for["Redis"] = _skipped_for.get("Redis", 0) + 1
        if "browser" in item.keywords and (no_browser := _browser_missing()):
            item.add_marker(pytest.mark.skip(reason=no_browser))
            _skipped_for["Chromium (browser tests)"] = _skipped_for.get("Chromium (browser tests)", 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if _skipped_for:
        terminalreporter.section("NOT TESTED", sep="!")
        for service, n in _skipped_for.items():
            terminalreporter.write_line(f"!! {n} tests skipped: {service} was not reachable")


@pytest.fixture(autouse=True)
def _private_media(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ML_ARTIFACT_ROOT = tmp_path / "ml"
    from django.core.cache import cache

    cache.clear()  # throttles, debounces and dashboard caches start empty in every test


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24), mode: str = "RGB"
) -> bytes:
    """A real PNG, encoded by Pillow."""
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def rng():  # type: ignore[no-untyped-def]
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture
def api_client():  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    return APIClient()


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from django.conf import settings

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "ANNOTATE_ENV": "test",
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "CELERY_BROKER_URL": os.environ["TEST_REDIS_URL"],
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "ML_ARTIFACT_ROOT": str(settings.ML_ARTIFACT_ROOT),
            "MALLOC_MMAP_MAX_": "0",
            "MALLOC_TRIM_THRESHOLD_": "100000000000",
        }
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """A real ``celery worker`` subprocess on the test Redis and the test database."""

    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.extra_env = extra_env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "annotate",
                "worker",
                "-Q",
                "cpu,gpu",
                "-c",
                "1",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            cwd=REPO,
            env=_worker_env(self.extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def celery_worker_process(tmp_path: Path, settings) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    """Point this process's Celery app at the test Redis and start a real worker.

    Needs ``@pytest.mark.django_db(transaction=True)``: the worker only sees committed rows.
    """
    if not os.environ.get("TEST_REDIS_URL") or not _has_postgres():
        pytest.skip("NOT TESTED: a real worker needs PostgreSQL and Redis")
    from annotate.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url = os.environ["TEST_REDIS_URL"]
    app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    celery_pools_reset(app)  # a pool bound to an earlier test's broker would swallow our messages
    with app.connection_for_write() as conn:  # start from an empty queue
        for queue in ("cpu", "gpu"):
            conn.default_channel.queue_purge(queue)
    worker = WorkerProcess(tmp_path / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        app.conf.broker_url, app.conf.task_always_eager = old
        celery_pools_reset(app)


def celery_pools_reset(app) -> None:  # type: ignore[no-untyped-def]
    """Drop the connection and producer pools bound to the current broker.

    kombu keeps them in a process-wide registry and the app caches its own: after the broker
    URL changes, a stale pool would publish to the old broker (or fail with "Acquire on
    closed pool" once it is closed).
    """
    import kombu.pools

    kombu.pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
