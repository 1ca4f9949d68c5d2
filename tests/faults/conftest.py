"""Fault tests: private Redis / PostgreSQL instances, skipped loudly when a binary is missing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.faults.services import REDIS_SERVER, PrivateRedis, pg_bin_dir

NO_REDIS_SERVER = "NOT TESTED: redis-server is not installed (fault tests start a private Redis)"
NO_PG_SERVER = "NOT TESTED: /usr/lib/postgresql/*/bin/initdb is missing (fault tests start a private PostgreSQL)"

needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS_SERVER)
needs_pg_server = pytest.mark.skipif(pg_bin_dir() is None, reason=NO_PG_SERVER)

_not_tested: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "tests/faults/" in report.nodeid:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "NOT TESTED" in reason:
            _not_tested.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if _not_tested:
        terminalreporter.section("FAULT TESTS NOT RUN", sep="!")
        for line in _not_tested:
            terminalreporter.write_line(f"!! {line}")


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private redis-server (port 6391 or a free one), removed after the test."""
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS_SERVER)
    redis = PrivateRedis(6391)
    redis.start()
    try:
        yield redis
    finally:
        redis.close()


@contextmanager
def celery_app_on(broker_url: str, settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Point this process's Celery app at ``broker_url`` (not eager); restore it after."""
    from annotate.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url = broker_url
    app.conf.task_always_eager = False
    settings.CELERY_TASK_ALWAYS_EAGER = False
    _pools_reset(app)
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.task_always_eager = old
        _pools_reset(app)


def _pools_reset(app) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import celery_pools_reset

    celery_pools_reset(app)
    app._pool = None
    app.amqp._producer_pool = None


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{log()[-4000:]}")
