"""Fault tests: private Redis / PostgreSQL instances, skipped loudly when a binary is missing."""

from __future__ import annotations

import pytest

from tests.faults.services import REDIS_SERVER, pg_bin_dir

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
