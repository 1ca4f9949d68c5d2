"""Browser-test helpers: where Chromium is, why the tests cannot run, signing in.

Kept free of pytest fixtures so that ``tests/conftest.py`` can ask it at collection time.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

# CHROMIUM_PATH, else the chromium on PATH (Debian installs /usr/bin/chromium).
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here (a NOT TESTED line), or None when they can."""
    if not CHROMIUM.exists():
        return f"NOT TESTED: no Chromium at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "NOT TESTED: the playwright Python package is not installed"
    return None


def login(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Sign in by typing into the login form, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").click()
    page.keyboard.type(username)
    page.get_by_label("Password").click()
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
