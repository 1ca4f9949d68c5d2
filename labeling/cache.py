"""A Redis cache that degrades instead of failing when Redis is down.

PostgreSQL is the source of truth; Redis is only the Celery broker and a cache (DESIGN,
Queue). Everything we keep in the cache can be lost or skipped: the cadence debounce, the
dashboard's heavy aggregates, the login throttle's counters. So while Redis is unreachable
a read is a miss, a write is dropped, ``add`` reports success (the caller does the work it
would have debounced: correct, only less cheap) and ``incr`` behaves as on a missing key.
Each failure is logged at most once per ``_LOG_EVERY_S`` per process, not once per call.

Trade-off, documented in docs/faults.md: the login throttle counts nothing while Redis is
down (it fails open); the alternative, refusing every login during a cache outage, locks
out every annotator for the length of it.

Short socket timeouts (unless ``OPTIONS`` sets its own) keep a Redis that hangs rather
than refuses connections from holding a request for long.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_LOG_EVERY_S = 30.0


class FailSoftRedisCache(RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        options.setdefault("socket_connect_timeout", 1.0)
        options.setdefault("socket_timeout", 2.0)
        super().__init__(server, {**params, "OPTIONS": options})
        self._last_logged = 0.0

    def _down(self, op: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            logger.warning("cache unavailable (%s degraded to a no-op): %s", op, exc)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        try:
            return bool(super().add(key, value, timeout, version))
        except _DOWN as exc:
            self._down("add", exc)
            return True

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        try:
            return super().get(key, default, version)
        except _DOWN as exc:
            self._down("get", exc)
            return default

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        try:
            super().set(key, value, timeout, version)
        except _DOWN as exc:
            self._down("set", exc)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        try:
            return bool(super().touch(key, timeout, version))
        except _DOWN as exc:
            self._down("touch", exc)
            return False

    def delete(self, key: Any, version: int | None = None) -> bool:
        try:
            return bool(super().delete(key, version))
        except _DOWN as exc:
            self._down("delete", exc)
            return False

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        try:
            return super().get_many(keys, version)
        except _DOWN as exc:
            self._down("get_many", exc)
            return {}

    def has_key(self, key: Any, version: int | None = None) -> bool:
        try:
            return bool(super().has_key(key, version))
        except _DOWN as exc:
            self._down("has_key", exc)
            return False

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        try:
            return int(super().incr(key, delta, version))
        except _DOWN as exc:
            self._down("incr", exc)
            raise ValueError(f"Key {key!r} not found (cache unavailable).") from exc

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        try:
            return super().set_many(data, timeout, version)
        except _DOWN as exc:
            self._down("set_many", exc)
            return list(data)

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        try:
            super().delete_many(keys, version)
        except _DOWN as exc:
            self._down("delete_many", exc)

    def clear(self) -> bool:
        try:
            return bool(super().clear())
        except _DOWN as exc:
            self._down("clear", exc)
            return False
