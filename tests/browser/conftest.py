"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's sync API, against ``live_server``.

No ``playwright install``: Playwright only drives the system browser. Without it the browser
tests are skipped and listed as NOT TESTED (see ``tests/conftest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, chromium_missing_reason
from tests.conftest import REPO

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
TIMEOUT_MS = 15_000
_shot_dirs: list[Path] = []


class Shots:
    """Numbered full-page screenshots of every page a test visits, in its own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    def __call__(self, page, name: str) -> Path:  # type: ignore[no-untyped-def]
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    # Playwright's sync API keeps an asyncio event loop running in this thread (it drives the
    # browser from a greenlet). Django then refuses every ORM call made from this thread with
    # SynchronousOnlyOperation, because it cannot tell that our test code is plain synchronous
    # code that merely shares the thread with the loop. The check is a false positive here:
    # DJANGO_ALLOW_ASYNC_UNSAFE is Django's documented switch for it (its docs name Jupyter,
    # which has the same situation). Set for these tests only; monkeypatch restores it, and
    # the loop is gone once the fixture stops Playwright, so other tests keep the check.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        # While Playwright's loop runs, asgiref gives the ORM calls of the test a connection of
        # their own (per-context storage), which Django's teardown would not close: the test
        # database could then not be dropped ("being accessed by other users"). Close it here.
        connections.close_all()
        pw.stop()


@pytest.fixture
def new_page(browser, live_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``new_page()``: a page in a fresh context (its own cookies), downloads accepted."""
    contexts = []

    def make():  # type: ignore[no-untyped-def]
        context = browser.new_context(
            base_url=live_server.url, accept_downloads=True, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors  # checked by the tests: a page that throws is a failure
        return page

    yield make
    errors = [f"{page.url}: {error}" for context in contexts for page in context.pages for error in page.js_errors]
    for context in contexts:
        context.close()
    if errors:  # any uncaught JavaScript error on any page fails the test, even one after its last assert
        pytest.fail("JavaScript errors in the pages:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    _shot_dirs.append(folder)
    return Shots(folder)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if _shot_dirs:
        terminalreporter.section("browser screenshots")
        terminalreporter.write_line(f"screenshots of every page the browser tests visited: {SCREENSHOTS.resolve()}")
        for folder in _shot_dirs:
            terminalreporter.write_line(f"  {folder.name}: {len(list(folder.glob('*.png')))} pages")
