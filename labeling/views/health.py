"""``/healthz``: is this web process able to serve? For load balancers and container health checks.

200 when the database answers, 503 when it does not. The broker is reported but never makes the
check fail: annotators keep labeling while Redis is down (the queue lives in the database), so
taking the web server out of rotation for it would turn a degraded state into an outage.
``?broker=1`` adds the broker probe (one connection, short timeout); without it the check is a
single ``SELECT 1``. No authentication and no detail beyond ok / error: nothing to leak.
"""

from __future__ import annotations

import time

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

BROKER_TIMEOUT_S = 1.0


def _database_ok() -> bool:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # noqa: BLE001 - any failure to talk to the database is "down"
        connection.close_if_unusable_or_obsolete()
        return False


def _broker_ok() -> bool:
    from annotate.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - unreachable, refused, timed out: all "down"
        return False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    started = time.perf_counter()
    checks = {"database": "ok" if _database_ok() else "error"}
    if request.GET.get("broker") == "1":
        checks["broker"] = "ok" if _broker_ok() else "error"
    healthy = checks["database"] == "ok"
    body = {
        "status": "ok" if healthy else "error",
        **checks,
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if healthy else 503)


urlpatterns = [path("healthz", healthz, name="healthz")]
