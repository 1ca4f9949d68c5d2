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

    def _soft(self, op: str, fallback: Any, call: Any, *args: Any) -> Any:
        """``call(*args)``, or ``fallback`` (logged, rate-limited) when Redis cannot be reached."""
        try:
            return call(*args)
        except _DOWN as exc:
            self._down(op, exc)
            return fallback

    def _down(self, op: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            logger.warning("cache unavailable (%s degraded to a no-op): %s", op, exc)

    # Each cache operation: Redis's, or on a Redis failure the answer of a missing/unwritable key.
    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._soft("add", True, super().add, key, value, timeout, version))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._soft("get", default, super().get, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        self._soft("set", None, super().set, key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._soft("touch", False, super().touch, key, timeout, version))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return bool(self._soft("delete", False, super().delete, key, version))

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        return dict(self._soft("get_many", {}, super().get_many, keys, version))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return bool(self._soft("has_key", False, super().has_key, key, version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        try:
            return int(super().incr(key, delta, version))
        except _DOWN as exc:
            self._down("incr", exc)
            raise ValueError(f"Key {key!r} not found (cache unavailable).") from exc

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        return list(self._soft("set_many", list(data), super().set_many, data, timeout, version))

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        self._soft("delete_many", None, super().delete_many, keys, version)

    def clear(self) -> bool:
        return bool(self._soft("clear", False, super().clear))
