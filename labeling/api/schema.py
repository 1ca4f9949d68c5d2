"""OpenAPI schema generation: component names for nested (HackSoft-style) serializers.

Every APIView nests its own ``InputSerializer`` and ``OutputSerializer``; drf-spectacular
names a component after the class name alone, so two views' ``InputSerializer`` collide
("Encountered 2 components with identical names"). This AutoSchema names a nested
serializer after its enclosing view instead: ``ItemGoldSetApi.InputSerializer`` becomes
``ItemGoldSetInput``. ``Meta.ref_name`` still wins where a view sets one.

It also documents the error statuses every operation can answer (the fuzz test in
tests/fuzz/ found them missing): 401 and 403 everywhere, 404 where the path names an
object, 400 where the client sends a body or query parameters; each with the one error
envelope of ``labeling.api.exception_handler``. A view's own description for a status wins.

Enable with ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "labeling.api.schema.AutoSchema"``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: validation_error, not_found, role_required…")
    message = serializers.CharField()
    extra = serializers.DictField(help_text="Details, e.g. extra.fields for a validation_error.")

    class Meta:
        ref_name = "Error"


_DEFAULT_ERRORS = {
    "400": "validation_error: `extra.fields` names the fields",
    "401": "not_authenticated: no or a revoked token",
    "403": "role_required / permission_denied: your role in this project is not enough",
    "404": "not_found: no such object, or you are not a member of its project",
}


class AutoSchema(openapi.AutoSchema):
    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        qualname = type(serializer).__qualname__
        if "." not in qualname or "<locals>" in qualname:
            return super().get_serializer_name(serializer, direction)
        outer, inner = qualname.split(".")[-2:]
        return outer.removesuffix("Api") + inner

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction=direction)
        if direction != "response":
            return responses
        wanted = ["401", "403"]
        if "{" in self.path:
            wanted.append("404")
        if self.method in ("POST", "PUT", "PATCH") or any(p["in"] == "query" for p in self._get_parameters()):
            wanted.append("400")
        for code in wanted:
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=_DEFAULT_ERRORS[code]), code
                )
        return responses
