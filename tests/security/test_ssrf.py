"""Attack: server-side request forgery through the import-from-URL API.

Defence: labeling/services/fetch.py (resolve once, refuse every non-public address
unless IMPORT_URL_ALLOWED_NETWORKS allows it, connect to the checked address, re-check
every redirect hop, cap size and time, http/https only). A real ``http.server`` on
127.0.0.1 plays both the attacker's target (it must never see a request when refused)
and, with the allow setting on, an internal image server.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from labeling.models import ImportJob, Item
from labeling.services.fetch import FetchRefused, Target, _PinnedHTTPConnection, url_fetch
from tests.conftest import png_bytes
from tests.security.conftest import World, api_as

pytestmark = pytest.mark.django_db

PNG = png_bytes(color=(1, 2, 3), size=(20, 10))


@pytest.fixture(autouse=True)
def _fetch_in_the_request(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_SYNC_MAX = 100


@dataclass
class Server:
    host: str
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


def _serve(host: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    state = Server(host=host, port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.requests.append((self.path, self.headers.get("Host", "")))
            path = urlsplit(self.path).path
            query = parse_qs(urlsplit(self.path).query)
            if path == "/img.png":
                self._send(200, PNG, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
            elif path == "/redirect":
                self._send(302, b"", {"Location": query["to"][0], "Content-Length": "0"})
            elif path == "/loop":
                self._send(302, b"", {"Location": "/loop", "Content-Length": "0"})
            elif path == "/big-declared":
                self._send(200, b"x" * 10, {"Content-Length": str(10**9)})
            elif path == "/big-undeclared":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"\0" * 4096)
            elif path == "/slow":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self._send(404, b"no", {"Content-Length": "2"})

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_server() -> Iterator[Server]:
    yield from _serve("127.0.0.2")


def _import(world: World, urls: list[str]) -> dict:  # type: ignore[type-arg]
    response = api_as(world.manager).post(f"/api/v1/projects/{world.mine.pk}/items/", {"urls": urls}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _codes(report: dict) -> list[str]:  # type: ignore[type-arg]
    return [r["code"] for r in report["rejected"]]


def test_ssrf_non_http_schemes_are_refused(world: World) -> None:
    urls = [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ftp://127.0.0.1/x.png",
        "dict://127.0.0.1:11211/stats",
        "javascript:alert(1)",
        "//example.org/x.png",
        "http://user:pw@example.org/x.png",
    ]
    report = _import(world, urls)
    assert report["imported"] == 0 and _codes(report) == ["url_not_allowed"] * len(urls)


def test_ssrf_private_loopback_link_local_and_tricks_are_refused(world: World, server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_TIMEOUT_SECONDS = 3
    p = server.port
    urls = [
        server.url("/img.png"),  # 127.0.0.1, with a real server answering behind it
        f"http://localhost:{p}/img.png",
        f"http://2130706433:{p}/img.png",  # decimal 127.0.0.1
        f"http://0177.0.0.1:{p}/img.png",  # octal
        f"http://0x7f.1:{p}/img.png",  # hex, short form
        f"http://127.1:{p}/img.png",
        f"http://[::ffff:127.0.0.1]:{p}/img.png",  # IPv4-mapped IPv6
        f"http://[::1]:{p}/img.png",
        f"http://0.0.0.0:{p}/img.png",
        f"http://[::]:{p}/img.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # cloud metadata
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6 (unique local)
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of 169.254.169.254
        "http://10.0.0.1/x.png",
        "http://172.16.5.4/x.png",
        "http://192.168.1.1/x.png",
        "http://100.64.0.1/x.png",  # carrier-grade NAT
        "http://[fe80::1]/x.png",
        "http://[fc00::1]/x.png",
        "http://224.0.0.1/x.png",  # multicast
        "http://[ff02::1]/x.png",
        "http://240.0.0.1/x.png",  # reserved
    ]
    report = _import(world, urls)
    assert report["imported"] == 0
    assert _codes(report) == ["address_not_allowed"] * len(urls), report["rejected"]
    assert server.requests == [], "a refused URL must be refused before any connection"


def test_ssrf_allowed_network_imports_from_a_real_local_server(world: World, server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    report = _import(world, [server.url("/img.png?sig=SECRET"), server.url("/img.png"), server.url("/missing.png")])
    assert report["imported"] == 1
    assert [d["file"] for d in report["duplicates"]] == [server.url("/img.png")]
    assert _codes(report) == ["fetch_failed"]  # the 404
    item = Item.objects.get(project=world.mine, original_name__startswith="http")
    assert item.file.read() == PNG and (item.width, item.height) == (20, 10)
    assert "SECRET" not in item.original_name  # query strings (signatures) are not stored
    assert server.requests[0][1] == f"127.0.0.1:{server.port}"


def test_ssrf_every_redirect_hop_is_checked(world: World, server: Server, other_server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.IMPORT_URL_MAX_REDIRECTS = 3
    hops = [
        other_server.url("/img.png"),  # loopback, but outside the allowed /32
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ]
    report = _import(world, [server.url(f"/redirect?to={to}") for to in hops] + [server.url("/loop")])
    assert report["imported"] == 0
    assert _codes(report) == ["address_not_allowed", "address_not_allowed", "url_not_allowed", "fetch_failed"]
    assert other_server.requests == []
    # A redirect to an allowed place is followed.
    report = _import(world, [server.url(f"/redirect?to={server.url('/img.png')}")])
    assert report["imported"] == 1


def test_ssrf_size_and_time_are_capped(world: World, server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.IMPORT_MAX_FILE_BYTES = 100_000
    settings.IMPORT_URL_TIMEOUT_SECONDS = 1.5
    started = time.monotonic()
    report = _import(world, [server.url("/big-declared"), server.url("/big-undeclared"), server.url("/slow")])
    elapsed = time.monotonic() - started
    assert _codes(report) == ["file_too_large", "file_too_large", "fetch_failed"]
    assert "too long" in report["rejected"][2]["reason"]
    assert elapsed < 8, f"the 10 s trickle must be cut at the deadline, took {elapsed:.1f} s"


def test_ssrf_connection_goes_to_the_checked_address_not_a_new_lookup(server: Server) -> None:
    """DNS rebinding: the socket connects to the pinned address; the name is only the Host header.

    ``rebinding.invalid`` cannot resolve at all, so the answer can only come from the pinned
    127.0.0.1: no second lookup happens between the check and the connection.
    """
    target = Target(scheme="http", host="rebinding.invalid", port=server.port, address="127.0.0.1", path="/img.png")
    conn = _PinnedHTTPConnection(target, timeout=5)
    conn.request("GET", target.path, headers={"Host": target.host_header})
    assert conn.getresponse().read() == PNG
    conn.close()
    assert server.requests == [("/img.png", f"rebinding.invalid:{server.port}")]


def test_ssrf_names_that_do_not_resolve_are_refused(settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_TIMEOUT_SECONDS = 3
    with pytest.raises(FetchRefused) as exc:
        url_fetch("http://no-such-host.invalid/x.png", cap=100)
    assert exc.value.rejection.code == "fetch_failed"


def test_ssrf_guard_also_applies_in_the_background_job(
    world: World, server: Server, settings, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    settings.IMPORT_URL_SYNC_MAX = 1  # two URLs: an ImportJob, run by the (eager) task after commit
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(world.manager).post(
            f"/api/v1/projects/{world.mine.pk}/items/",
            {"urls": [server.url("/img.png"), "http://169.254.169.254/latest/"]},
            format="json",
        )
    assert response.status_code == 202, response.content
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert job.status == ImportJob.Status.SUCCEEDED, job.error
    assert job.report["imported"] == 0
    assert [r["code"] for r in job.report["rejected"]] == ["address_not_allowed", "address_not_allowed"]
    assert server.requests == []


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed certificate for IP 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for state in _serve("127.0.0.1", tls=context):
        yield state, cert


def test_ssrf_https_verifies_the_certificate_of_the_pinned_host(
    world: World, tls_server: tuple[Server, Path], settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    server, cert = tls_server
    settings.IMPORT_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    url = f"https://127.0.0.1:{server.port}/img.png"
    # An untrusted (self-signed) certificate: refused.
    report = _import(world, [url])
    assert _codes(report) == ["fetch_failed"] and "CERTIFICATE_VERIFY_FAILED" in report["rejected"][0]["reason"]
    # Trusted (OpenSSL reads SSL_CERT_FILE when the context loads its default CAs): imported over TLS.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    report = _import(world, [url])
    assert report["imported"] == 1, report
