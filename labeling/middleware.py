"""Middleware of our own.

RECONSTRUCTED: this file was overwritten by mistake (by the security developer) moments
after its author created it; what follows rebuilds ``DatabaseUnavailableMiddleware`` from
its one-line description in settings ("a 503 JSON error while PostgreSQL is down"). Its
author should check it against the original.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse


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
                "extra": {},
            },
            status=503,
        )
        response["Retry-After"] = "5"
        return response
