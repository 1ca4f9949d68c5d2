"""OpenAPI schema generation: component names for nested (HackSoft-style) serializers.

Every APIView nests its own ``InputSerializer`` and ``OutputSerializer``; drf-spectacular
names a component after the class name alone, so two views' ``InputSerializer`` collide
("Encountered 2 components with identical names"). This AutoSchema names a nested
serializer after its enclosing view instead: ``ItemGoldSetApi.InputSerializer`` becomes
``ItemGoldSetInput``. ``Meta.ref_name`` still wins where a view sets one.

Enable with ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "labeling.api.schema.AutoSchema"``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi


class AutoSchema(openapi.AutoSchema):
    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        qualname = type(serializer).__qualname__
        if "." not in qualname or "<locals>" in qualname:
            return super().get_serializer_name(serializer, direction)
        outer, inner = qualname.split(".")[-2:]
        return outer.removesuffix("Api") + inner
