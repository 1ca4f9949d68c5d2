"""Attack surface of a misconfigured production: debug pages, plain HTTP, framing, sniffing.

Defence: ``ANNOTATE_ENV=prod`` in annotate/settings.py: DEBUG off (and refused if asked
for), secrets required, HTTPS redirect, HSTS, secure cookies, nosniff, Referrer-Policy,
X-Frame-Options DENY, a Content-Security-Policy (labeling/security_headers.py). Each check
runs in a subprocess, because settings are read once per process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _prod_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "CACHE_", "IMPORT_"))}
    env.update(
        {
            "ANNOTATE_ENV": "prod",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "annotate.example.org",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://annotate.example.org",
            "DATABASE_URL": "postgres://annotate:pw@127.0.0.1:5432/annotate",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
            "CACHE_URL": "redis://127.0.0.1:6379/1",
        }
    )
    env.pop("DATABASE_URL_TEST", None)
    env.update(overrides)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_deploy_check_is_clean_in_production_settings() -> None:
    result = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], _prod_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
# A page that needs neither the database nor collected static files (none exist here).
r = Client().get("/api/v1/auth/token/", secure=True, HTTP_HOST="annotate.example.org")
plain = Client().get("/api/v1/auth/token/", HTTP_HOST="annotate.example.org")
print(json.dumps({
    "debug": settings.DEBUG,
    "status": r.status_code,
    "headers": {k: v for k, v in r.items()},
    "plain_status": plain.status_code,
    "plain_location": plain.get("Location", ""),
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "session_httponly": settings.SESSION_COOKIE_HTTPONLY,
}))
"""


def test_production_answers_carry_the_security_headers() -> None:
    result = _run([sys.executable, "-c", PROBE], _prod_env(DJANGO_SETTINGS_MODULE="annotate.settings"))
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    headers = probe["headers"]
    assert probe["debug"] is False and probe["status"] in (401, 403, 405)
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "includeSubDomains" in headers["Strict-Transport-Security"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert probe["plain_status"] == 301 and probe["plain_location"].startswith("https://")
    assert probe["session_secure"] and probe["csrf_secure"] and probe["session_httponly"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"DJANGO_DEBUG": "true"}, "DJANGO_DEBUG must be off"),
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
    ],
)
def test_production_refuses_to_boot_insecurely(override: dict[str, str], message: str) -> None:
    env = _prod_env(**override)
    for key, value in override.items():
        if not value:
            env.pop(key)
    result = _run([sys.executable, "manage.py", "check"], env)
    assert result.returncode != 0
    assert message in result.stderr
