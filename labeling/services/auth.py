"""Writes for API credentials: issue and revoke the caller's DRF token."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from labeling.errors import ApplicationError


def auth_token_issue(*, request: HttpRequest | None, username: str, password: str) -> Token:
    """The user's API token (created on first use) if the password is right.

    One token per user: logging in again returns the same key until it is revoked.
    Raises ApplicationError ``invalid_credentials`` (400) for a wrong password, an unknown
    or an inactive user, without saying which.
    """
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        raise ApplicationError("Wrong username or password.", code="invalid_credentials")
    token, _ = Token.objects.get_or_create(user=user)
    return token


def auth_token_revoke(*, user: AbstractBaseUser) -> None:
    """Delete the user's token; requests with the old key then get 401. Idempotent."""
    Token.objects.filter(user_id=user.pk).delete()
