"""API: API tokens. ``POST /api/v1/auth/token/`` trades a username and password for the
caller's token; ``DELETE`` revokes it (the old key then gets 401 everywhere).
``DELETE /api/v1/auth/tokens/{user_id}/`` lets staff revoke anybody's token (a leaked
key); others get 404.

Brute force, two layers: failed attempts are counted per user name and per client
address (``labeling.services.auth``: ``LOGIN_MAX_FAILURES`` in ``LOGIN_LOCKOUT_SECONDS``,
then 429 ``login_throttled``, for the HTML sign-in form too), and every attempt is rate
limited per address with DRF's ScopedRateThrottle, scope ``login`` (default 10/min;
``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]`` overrides it). The counters live in
Django's default cache: with several web processes that cache must be shared (Redis), or
each process counts on its own.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from labeling.services.auth import auth_token_issue, auth_token_revoke, auth_token_revoke_for

LOGIN_RATE = "10/min"


class LoginRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle whose ``login`` rate is set here unless settings name one."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) or LOGIN_RATE


class AuthTokenApi(APIView):
    """POST: log in with a username and password, get the token. DELETE: revoke your token."""

    throttle_scope = "login"

    class CreateInputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)

        class Meta:
            ref_name = "AuthTokenCreateInput"

    class CreateOutputSerializer(serializers.Serializer):
        token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
        user_id = serializers.IntegerField()
        username = serializers.CharField()

        class Meta:
            ref_name = "AuthToken"

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method == "POST":
            return [AllowAny()]
        return [IsAuthenticated()]

    def get_throttles(self) -> list[BaseThrottle]:
        # Only logging in is throttled; revoking needs a valid credential already.
        if self.request.method == "POST":
            return [LoginRateThrottle()]
        return []

    @extend_schema(
        operation_id="auth_token_create",
        request=CreateInputSerializer,
        responses={
            200: CreateOutputSerializer,
            400: OpenApiResponse(description="invalid_credentials or validation_error"),
            429: OpenApiResponse(description="login_throttled or throttled: too many login attempts"),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        payload = self.CreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        token = auth_token_issue(request=request._request, **payload.validated_data)
        data: dict[str, Any] = {"token": token.key, "user_id": token.user_id, "username": token.user.get_username()}
        return Response(self.CreateOutputSerializer(data).data)

    @extend_schema(operation_id="auth_token_delete", request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        auth_token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuthTokenRevokeApi(APIView):
    """DELETE: revoke another user's token (staff only; everybody else gets 404)."""

    @extend_schema(
        operation_id="auth_token_revoke_user",
        request=None,
        responses={204: None, 404: OpenApiResponse(description="not_found")},
    )
    def delete(self, request: Request, user_id: int) -> Response:
        auth_token_revoke_for(actor=request.user, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("auth/tokens/<int:user_id>/", AuthTokenRevokeApi.as_view(), name="api-auth-token-revoke"),
]
