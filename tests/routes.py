"""Every API route as declared by its view: what permission tests walk so none is forgotten."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

METHODS = ("get", "post", "put", "patch", "delete")


def routes_under(prefix_filter: str) -> list[tuple[str, str]]:
    """(route, method) for every URL pattern starting with ``prefix_filter`` whose view has that method."""
    found: list[tuple[str, str]] = []

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
                continue
            route = prefix + str(pattern.pattern)
            view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
            if route.startswith(prefix_filter) and view is not None:
                found.extend((route, m) for m in METHODS if hasattr(view, m))

    walk(get_resolver().url_patterns, "")
    return found
