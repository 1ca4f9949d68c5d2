"""Security headers Django 5.2 does not set by itself: Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    """Add ``settings.CONTENT_SECURITY_POLICY`` to answers that do not carry a policy already.

    A policy set by a view (the media views' ``default-src 'none'; sandbox``) wins. Paths in
    ``CONTENT_SECURITY_POLICY_EXEMPT_PREFIXES`` get none: third-party pages with inline scripts.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", "")
        exempt = tuple(getattr(settings, "CONTENT_SECURITY_POLICY_EXEMPT_PREFIXES", ()))
        if policy and "Content-Security-Policy" not in response and not request.path.startswith(exempt):
            response["Content-Security-Policy"] = policy
        return response
