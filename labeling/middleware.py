"""Middleware of our own: a clean 503 while the database is down (docs/faults.md)."""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

RETRY_AFTER_S = 5  # seconds: a PostgreSQL restart or failover usually takes a few


class DatabaseUnavailableMiddleware:
    """Answer 503 ``database_unavailable`` (JSON, ``Retry-After``) when PostgreSQL cannot be reached.

    A request that fails because the database is down gets a clean, retryable error instead
    of a 500 page; the next request opens a fresh connection (CONN_HEALTH_CHECKS), so the app
    recovers by itself once the database is back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        response = JsonResponse(
            {
                "code": "database_unavailable",
                "message": "The database is unavailable; try again shortly.",
                "extra": {"retry_after": RETRY_AFTER_S},
            },
            status=503,
        )
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
