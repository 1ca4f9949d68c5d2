"""Attack: guessing passwords through the sign-in form and the token API.

Defence: labeling/services/auth.py counts failures per user name and per client address
in the cache; at LOGIN_MAX_FAILURES (per name) or LOGIN_MAX_FAILURES_PER_IP (per address)
sign-in is refused before the password is checked (HTML: 429 with a form error; API: 429
``login_throttled``). The token API also has DRF's per-address rate limit.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-123"


@pytest.fixture(autouse=True)
def _limits(settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_MAX_FAILURES_PER_IP = 6
    settings.LOGIN_LOCKOUT_SECONDS = 600
    # The DRF per-address rate stays out of the way: these tests are about the failure counters.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "1000/min"}}


def _form(client: Client, username: str, password: str, ip: str = "203.0.113.5"):  # type: ignore[no-untyped-def]
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def _api(username: str, password: str, ip: str = "203.0.113.5"):  # type: ignore[no-untyped-def]
    return APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=ip
    )


def test_brute_force_html_login_is_locked_per_user_name(client: Client) -> None:
    user = UserFactory(username="radiologist")
    for _ in range(3):
        response = _form(client, "radiologist", "guess")
        assert response.status_code == 200 and b"match" in response.content
    # Locked: even the right password is refused, from a fresh address, without being checked.
    response = _form(client, "Radiologist", PASSWORD, ip="198.51.100.7")
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert "_auth_user_id" not in client.session
    # Another account is not affected.
    UserFactory(username="other")
    assert _form(Client(), "other", PASSWORD, ip="198.51.100.8").status_code == 302
    assert user.pk  # (the locked account still exists; the lock expires with LOGIN_LOCKOUT_SECONDS)


def test_brute_force_html_login_is_locked_per_address(client: Client) -> None:
    UserFactory(username="victim")
    for i in range(6):  # password spraying: one guess each on many names
        assert _form(client, f"name{i}", "guess").status_code == 200
    assert _form(client, "victim", PASSWORD).status_code == 429
    assert _form(Client(), "victim", PASSWORD, ip="198.51.100.9").status_code == 302


def test_brute_force_api_token_is_locked_per_user_name() -> None:
    UserFactory(username="engineer")
    for _ in range(3):
        response = _api("engineer", "guess")
        assert response.status_code == 400 and response.json()["code"] == "invalid_credentials"
    response = _api("engineer", PASSWORD, ip="198.51.100.10")
    assert response.status_code == 429 and response.json()["code"] == "login_throttled"
    assert "token" not in response.json()


def test_brute_force_shared_counter_between_form_and_api(client: Client) -> None:
    UserFactory(username="shared")
    for _ in range(2):
        _form(client, "shared", "guess")
    _api("shared", "guess")
    assert _api("shared", PASSWORD).status_code == 429


def test_brute_force_success_clears_the_user_counter(client: Client) -> None:
    UserFactory(username="forgetful")
    for _ in range(2):
        _form(client, "forgetful", "guess")
    assert _api("forgetful", PASSWORD).status_code == 200
    for _ in range(2):
        _form(client, "forgetful", "guess")
    assert _api("forgetful", PASSWORD).status_code == 200  # 2 + 2 failures, never 3 in a row


def test_brute_force_api_rate_limit_per_address(settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_MAX_FAILURES = 100
    settings.LOGIN_MAX_FAILURES_PER_IP = 100
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "3/min"}}
    UserFactory(username="rated")
    statuses = [_api("rated", PASSWORD if i == 3 else "guess").status_code for i in range(4)]
    assert statuses == [400, 400, 400, 429]


def test_brute_force_proxy_count_reads_the_forwarded_address(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_PROXY_COUNT = 1
    UserFactory(username="behind-proxy")
    for i in range(6):  # all from one client behind the proxy, whatever it writes on the left
        client.post(
            "/accounts/login/",
            {"username": f"n{i}", "password": "x"},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.50",
        )
    blocked = client.post(
        "/accounts/login/",
        {"username": "behind-proxy", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.50",
    )
    assert blocked.status_code == 429
    other = Client().post(
        "/accounts/login/",
        {"username": "behind-proxy", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.51",
    )
    assert other.status_code == 302  # another client behind the same proxy is not locked out
