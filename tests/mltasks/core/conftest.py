"""The ML core's tests run without Django (``-p no:django``): no database, no settings, no media."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_media() -> None:
    """Overrides tests/conftest.py's fixture of the same name, which needs pytest-django's ``settings``."""
