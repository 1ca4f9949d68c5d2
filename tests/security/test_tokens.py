"""Attack: a leaked API token that cannot be taken back.

Defence: ``DELETE /api/v1/auth/token/`` revokes the caller's token; staff revoke anybody's
with ``DELETE /api/v1/auth/tokens/{user_id}/`` (everyone else gets 404) or in the Django
admin. A revoked key gets 401 on the API and 404 on the media routes.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from rest_framework.authtoken.models import Token, TokenProxy
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.security.conftest import World

pytestmark = pytest.mark.django_db


def _token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_tokens_revoked_by_their_owner_get_401(world: World) -> None:
    key = Token.objects.create(user=world.annotator).key
    client = _token_client(key)
    assert client.get("/api/v1/projects/").status_code == 200
    assert client.delete("/api/v1/auth/token/").status_code == 204
    assert client.get("/api/v1/projects/").status_code == 401
    assert client.get(f"/api/v1/projects/{world.mine.pk}/next/").status_code == 401
    media = Client().get(f"/files/items/{world.my_item.pk}/image", HTTP_AUTHORIZATION=f"Token {key}")
    assert media.status_code == 404
    # Signing in again issues a new key; the old one stays dead.
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": world.annotator.username, "password": "pw-for-tests-123"}, format="json"
    )
    assert response.status_code == 200 and response.json()["token"] != key
    assert _token_client(key).get("/api/v1/projects/").status_code == 401


def test_tokens_revoked_by_staff_get_401(world: World) -> None:
    key = Token.objects.create(user=world.annotator).key
    staff = UserFactory(username="admin-person", is_staff=True)
    # A project manager is not staff: 404, and the token keeps working.
    assert (
        _token_client(Token.objects.create(user=world.manager).key)
        .delete(f"/api/v1/auth/tokens/{world.annotator.pk}/")
        .status_code
        == 404
    )
    assert _token_client(key).get("/api/v1/projects/").status_code == 200
    admin_client = APIClient()
    admin_client.force_authenticate(staff)
    assert admin_client.delete(f"/api/v1/auth/tokens/{world.annotator.pk}/").status_code == 204
    assert _token_client(key).get("/api/v1/projects/").status_code == 401
    assert admin_client.delete("/api/v1/auth/tokens/999999/").status_code == 404


def test_tokens_can_be_revoked_in_the_admin(world: World) -> None:
    assert admin.site.is_registered(TokenProxy)
    key = Token.objects.create(user=world.annotator).key
    superuser = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(superuser)
    response = client.post(f"/admin/authtoken/tokenproxy/{world.annotator.pk}/delete/", {"post": "yes"}, follow=False)
    assert response.status_code == 302
    assert _token_client(key).get("/api/v1/projects/").status_code == 401
