"""/healthz: 200 while the database answers, 503 when it does not; the broker never fails it."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from annotate.celery import app

pytestmark = pytest.mark.django_db


def test_healthy(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"
    assert "broker" not in response.json()
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.redis
def test_broker_probe_reports_a_real_broker(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(app.conf, "broker_url", os.environ["TEST_REDIS_URL"])
    assert client.get("/healthz?broker=1").json()["broker"] == "ok"


def test_unreachable_broker_is_reported_but_not_fatal(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    response = client.get("/healthz?broker=1")
    assert response.status_code == 200
    assert response.json() == {**response.json(), "status": "ok", "database": "ok", "broker": "error"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_down_is_503(client) -> None:  # type: ignore[no-untyped-def]
    # A real failed connection: the same server settings with a port nothing listens on.
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = "1"
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert response.json()["database"] == "error"
    assert client.get("/healthz").status_code == 200  # and back once it answers again
