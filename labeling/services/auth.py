"""Writes for credentials: issue and revoke API tokens; count failed sign-ins (brute force).

The failed-sign-in counters live in Django's default cache, one per user name and one per
client address, each a fixed window of ``LOGIN_LOCKOUT_SECONDS`` from its first failure.
At ``LOGIN_MAX_FAILURES`` failures for a user name (or ``LOGIN_MAX_FAILURES_PER_IP`` from an
address) further attempts are refused *before* the password is checked, so a guess made
while locked out tells nothing, right or wrong. A successful sign-in clears the user
name's counter (not the address's: a botnet node that knows one password must not reset
its own count). Both the HTML form and the token API go through here.

With several web processes the cache must be shared (Redis); with the per-process
default each process counts on its own (docs/security.md).
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from labeling.errors import ApplicationError, NotFoundError


class LoginThrottledError(ApplicationError):
    code = "login_throttled"
    http_status = 429


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def client_ip(request: HttpRequest | None) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For as written by LOGIN_PROXY_COUNT trusted proxies."""
    if request is None:
        return ""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies = _setting("LOGIN_PROXY_COUNT", 0)
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if part.strip()]
    # Each trusted proxy appends the address it saw; anything further left is client-written.
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def _keys(username: str, ip: str) -> list[tuple[str, int]]:
    # Hash the user name: it is attacker-chosen (length, characters) and must make a safe cache key.
    user_key = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
    keys = [(f"login-fail:user:{user_key}", _setting("LOGIN_MAX_FAILURES", 5))]
    if ip:
        keys.append((f"login-fail:ip:{ip}", _setting("LOGIN_MAX_FAILURES_PER_IP", 50)))
    return keys


def login_throttle_check(*, username: str, request: HttpRequest | None) -> None:
    """Raise LoginThrottledError (429) when the user name or the address has too many recent failures."""
    keys = _keys(username, client_ip(request))
    counts = cache.get_many([key for key, _ in keys])
    for key, limit in keys:
        if limit > 0 and int(counts.get(key) or 0) >= limit:
            seconds = _setting("LOGIN_LOCKOUT_SECONDS", 900)
            raise LoginThrottledError(
                f"Too many failed sign-ins. Try again in {max(1, seconds // 60)} minutes.",
                extra={"retry_after_seconds": seconds},
            )


def login_failure_record(*, username: str, request: HttpRequest | None) -> None:
    """Count one failed sign-in against the user name and the address."""
    window = _setting("LOGIN_LOCKOUT_SECONDS", 900)
    for key, _ in _keys(username, client_ip(request)):
        if not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr: start a new window
                cache.add(key, 1, timeout=window)


def login_failures_clear(*, username: str) -> None:
    cache.delete(_keys(username, "")[0][0])


def login_authenticate(*, request: HttpRequest | None, username: str, password: str) -> AbstractBaseUser | None:
    """``authenticate()`` behind the brute-force throttle: the user, or None for wrong credentials.

    Raises LoginThrottledError while the user name or the address is locked out.
    """
    login_throttle_check(username=username, request=request)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        login_failure_record(username=username, request=request)
        return None
    login_failures_clear(username=username)
    return user


def auth_token_issue(*, request: HttpRequest | None, username: str, password: str) -> Token:
    """The user's API token (created on first use) if the password is right.

    One token per user: logging in again returns the same key until it is revoked.
    Raises ApplicationError ``invalid_credentials`` (400) for a wrong password, an unknown
    or an inactive user, without saying which; LoginThrottledError (429) when locked out.
    """
    user = login_authenticate(request=request, username=username, password=password)
    if user is None:
        raise ApplicationError("Wrong username or password.", code="invalid_credentials")
    token, _ = Token.objects.get_or_create(user=user)
    return token


def auth_token_revoke(*, user: AbstractBaseUser) -> None:
    """Delete the user's token; requests with the old key then get 401. Idempotent."""
    Token.objects.filter(user_id=user.pk).delete()


def auth_token_revoke_for(*, actor: AbstractBaseUser, user_id: int) -> None:
    """An administrator (staff) revokes another user's token, e.g. a leaked one. Idempotent.

    Raises NotFoundError for a non-staff actor (the route's existence is not revealed) and
    for an unknown user.
    """
    from django.contrib.auth import get_user_model

    if not getattr(actor, "is_staff", False):
        raise NotFoundError("Not found.")
    if not get_user_model().objects.filter(pk=user_id).exists():
        raise NotFoundError("User not found.")
    Token.objects.filter(user_id=user_id).delete()
