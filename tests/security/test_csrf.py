"""Attack: cross-site request forgery against a signed-in browser.

Defence: Django's CsrfViewMiddleware on form posts, and DRF's SessionAuthentication,
which enforces the CSRF check on unsafe methods of session-authenticated API calls (a
token-authenticated call carries no ambient credential, so it needs none). The client
here enforces CSRF checks like a browser does, unlike Django's default test client.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from labeling.models import Project
from tests.security.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(world: World) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.manager)
    return client


def _api_writes(world: World) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    pid = world.mine.pk
    return [
        ("post", "/api/v1/projects/", {"name": "forged", "classes": [{"name": "a"}, {"name": "b"}]}),
        ("patch", f"/api/v1/projects/{pid}/", {"name": "forged"}),
        ("delete", f"/api/v1/projects/{pid}/", {}),
        ("post", f"/api/v1/projects/{pid}/classes/", {"name": "forged"}),
        ("post", f"/api/v1/projects/{pid}/members/", {"username": "x", "role": "manager"}),
        ("post", f"/api/v1/projects/{pid}/train/", {}),
        ("post", f"/api/v1/projects/{pid}/items/", {"urls": ["https://example.org/x.png"]}),
        ("post", "/api/v1/annotations/", {"lease_id": 1, "label_id": 1}),
        ("delete", "/api/v1/auth/token/", {}),
    ]


def test_csrf_api_writes_with_a_session_and_no_token_are_403(browser: Client, world: World) -> None:
    for method, url, body in _api_writes(world):
        response = getattr(browser, method)(url, body, content_type="application/json")
        assert response.status_code == 403, (method, url, response.status_code)
        assert "CSRF" in response.json()["message"], (method, url)
    world.mine.refresh_from_db()
    assert world.mine.name != "forged" and not Project.objects.filter(name="forged").exists()


def test_csrf_api_write_with_the_token_passes(browser: Client, world: World) -> None:
    browser.get("/")  # the page sets the csrftoken cookie
    token = browser.cookies["csrftoken"].value
    response = browser.patch(
        f"/api/v1/projects/{world.mine.pk}/",
        {"name": "renamed"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 200
    world.mine.refresh_from_db()
    assert world.mine.name == "renamed"


def test_csrf_token_authenticated_api_calls_need_no_csrf(world: World) -> None:
    key = Token.objects.create(user=world.manager).key
    response = Client(enforce_csrf_checks=True).patch(
        f"/api/v1/projects/{world.mine.pk}/",
        {"name": "by-token"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {key}",
    )
    assert response.status_code == 200


def test_csrf_form_posts_without_token_are_403(browser: Client, world: World) -> None:
    forms = [
        ("/projects/new/", {"name": "forged", "classes": "a\nb", "overlap": "1", "eval_fraction": "0"}),
        ("/accounts/logout/", {}),
        ("/accounts/login/", {"username": world.manager.username, "password": "pw-for-tests-123"}),
    ]
    for url, data in forms:
        assert browser.post(url, data).status_code == 403, url
    assert not Project.objects.filter(name="forged").exists()
    assert "_auth_user_id" in browser.session  # the forged logout did not log out


def test_csrf_cross_origin_post_with_a_stolen_token_is_refused_over_https(world: World, settings) -> None:  # type: ignore[no-untyped-def]
    """Over HTTPS Django also checks Origin/Referer: a token alone is not enough from another site."""
    settings.ALLOWED_HOSTS = ["annotate.example.org"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.manager)
    client.get("/", secure=True, HTTP_HOST="annotate.example.org")
    token = client.cookies["csrftoken"].value
    response = client.patch(
        f"/api/v1/projects/{world.mine.pk}/",
        {"name": "forged"},
        content_type="application/json",
        secure=True,
        HTTP_HOST="annotate.example.org",
        HTTP_X_CSRFTOKEN=token,
        HTTP_ORIGIN="https://evil.example.com",
    )
    assert response.status_code == 403
