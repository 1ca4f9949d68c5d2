"""Fetching an import URL without handing the server to whoever typed it (SSRF guard).

An import URL is fetched by the server, from inside the network it runs in, so a URL is
a request the attacker makes *as the server*: to the cloud metadata service
(169.254.169.254), to Redis or PostgreSQL on loopback, to an admin page on the office
network. The guard, in order, for the first request and again for every redirect hop:

1. the URL is ``http`` or ``https`` with a host name, no user:password part, and the
   scheme's port or an explicit one (``file:``, ``gopher:``, ``ftp:``... are refused);
2. the host name is resolved once, here (``getaddrinfo``, bounded by the timeout); a host
   written as a number in any form (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) resolves to
   the address it means, so the checks below see through the trick;
3. every address it resolves to must be publicly routable: private, loopback,
   link-local, multicast, reserved, unspecified and shared (CGNAT) addresses are refused,
   for IPv4 and IPv6, with IPv4-mapped (``::ffff:127.0.0.1``), NAT64, 6to4 and Teredo
   addresses judged by the IPv4 address inside them. ``IMPORT_URL_ALLOWED_NETWORKS`` lists
   the CIDRs an operator allows anyway (a private image server); nothing else gets through;
4. the connection goes to the address that was checked (the socket connects to the IP;
   the host name is only sent as ``Host`` and used for TLS SNI and certificate checks), so
   a DNS answer that changes between the check and the connection (DNS rebinding) gains
   nothing;
5. redirects are followed by hand, at most ``IMPORT_URL_MAX_REDIRECTS``, each hop checked
   from step 1;
6. the body is read with the import size cap (``IMPORT_MAX_FILE_BYTES``; a larger
   ``Content-Length`` is refused before reading) and under a total deadline
   (``IMPORT_URL_TIMEOUT_SECONDS`` per socket operation and for the whole fetch).

No proxy from the environment is used (``http.client`` reads none): a proxy would make
the connection, not us, and the pinning above would mean nothing.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from django.conf import settings

from labeling.services.imports import ImportCandidate, RejectCode, Rejection, display_name

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = {"http": 80, "https": 443}
USER_AGENT = "annotate-import/1"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_CHUNK = 64 * 1024
# Special-purpose ranges that Python's ipaddress still calls global (IANA: not forwardable).
_EXTRA_REFUSED = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("192.88.99.0/24"))
# One resolver thread pool for the process: getaddrinfo has no timeout of its own, so it
# runs in a thread that we stop waiting for. A stuck lookup keeps its thread, not the request.
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="import-dns")


class FetchRefused(OSError):
    """A URL that is not fetched, or whose fetch failed; carries the report's Rejection."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(code, reason)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def allowed_networks() -> list[IPNetwork]:
    """The CIDRs of settings.IMPORT_URL_ALLOWED_NETWORKS (private ranges an operator allows)."""
    return [
        ipaddress.ip_network(str(cidr).strip(), strict=False) for cidr in _setting("IMPORT_URL_ALLOWED_NETWORKS", [])
    ]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped, NAT64, 6to4 or Teredo."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is where traffic ends up
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why the address may not be fetched from, or None when it is publicly routable."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = address_refusal(inner)
            if why:
                return f"{why[:-1]} (inside the IPv6 address {ip})."
            if ip.ipv4_mapped is not None:
                return None  # ::ffff:a.b.c.d is a.b.c.d; the IPv6 tests below would call it reserved
    for kind, bad in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
        ("special-purpose", any(ip.version == net.version and ip in net for net in _EXTRA_REFUSED)),
    ):
        if bad:
            article = "an" if kind[0] in "aeiou" else "a"
            return f"{ip} is {article} {kind} address." if kind != "not globally routable" else f"{ip} is {kind}."
    return None


def address_allowed(ip: IPAddress, networks: Sequence[IPNetwork]) -> Rejection | None:
    """None when the server may connect to ``ip``, else the Rejection."""
    # ::ffff:a.b.c.d is a.b.c.d: an allowed IPv4 network allows its mapped form too.
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if any(plain.version == net.version and plain in net for net in networks):
        return None
    why = address_refusal(ip)
    if why is None:
        return None
    return Rejection(RejectCode.ADDRESS_NOT_ALLOWED, f"Not fetched: {why}")


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the pinned address) and what to ask for."""

    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def url_parse(url: str) -> SplitResult:
    """The URL split, if its shape may be fetched; FetchRefused(url_not_allowed) otherwise."""
    if not isinstance(url, str) or len(url) > 4096 or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, "Not a valid URL.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, "Not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, f"Only http and https URLs are fetched, not {scheme or 'no'}:.")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, "URLs with a user name or password are not fetched.")
    if not parts.hostname:
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, "The URL has no host.")
    if port == 0:
        raise FetchRefused(RejectCode.URL_NOT_ALLOWED, "Port 0 is not a port.")
    return parts


def _resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise FetchRefused(RejectCode.FETCH_FAILED, f"Looking up {host} took longer than {timeout:g} s.") from None
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchRefused(RejectCode.FETCH_FAILED, f"Could not resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addresses:
        raise FetchRefused(RejectCode.FETCH_FAILED, f"{host} has no IPv4 or IPv6 address.")
    return addresses


def url_target(url: str, *, timeout: float) -> Target:
    """Check a URL (shape, then every address its host resolves to) and pin one address.

    Every resolved address must pass, not only the one used: a name that answers with a
    public and a private address is refused.
    """
    parts = url_parse(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or SCHEMES[scheme]
    networks = allowed_networks()
    addresses = _resolve(host, port, timeout)
    for ip in addresses:
        refused = address_allowed(ip, networks)
        if refused is not None:
            raise FetchRefused(refused.code, refused.reason)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        self._tls = ssl.create_default_context()  # verifies the certificate against the host name
        super().__init__(target.host, target.port, timeout=timeout, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # SNI and the certificate check use the host name; the socket is already on the
        # checked address.
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchRefused(RejectCode.FETCH_FAILED, f"Fetching {url_display(url)} took too long.")
    return left


def url_fetch(url: str, *, cap: int) -> bytes:
    """GET ``url`` through the guard; at most ``cap`` bytes of the body.

    Returns ``cap`` bytes when the body is longer (the caller's size check then refuses
    it), so pass the limit plus one. Raises FetchRefused with the reason for the report.
    """
    timeout = float(_setting("IMPORT_URL_TIMEOUT_SECONDS", 10))
    max_redirects = int(_setting("IMPORT_URL_MAX_REDIRECTS", 3))
    limit = int(settings.IMPORT_MAX_FILE_BYTES)
    deadline = time.monotonic() + timeout
    current = url
    for _hop in range(max_redirects + 1):
        target = url_target(current, timeout=_remaining(deadline, url))
        conn_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = conn_class(target, timeout=min(timeout, _remaining(deadline, url)))
        try:
            try:
                conn.request(
                    "GET",
                    target.path,
                    headers={
                        "Host": target.host_header,
                        "User-Agent": USER_AGENT,
                        "Accept": "image/*",
                        "Accept-Encoding": "identity",
                        "Connection": "close",
                    },
                )
                response = conn.getresponse()
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                raise FetchRefused(RejectCode.FETCH_FAILED, f"Could not fetch: {exc}") from None
            if response.status in {301, 302, 303, 307, 308}:
                location = response.getheader("Location")
                if not location:
                    raise FetchRefused(RejectCode.FETCH_FAILED, f"HTTP {response.status} without a Location.")
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise FetchRefused(RejectCode.FETCH_FAILED, f"The server answered HTTP {response.status}.")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise FetchRefused(
                    RejectCode.FILE_TOO_LARGE, f"The server announces {length} bytes, over the limit of {limit}."
                )
            return _read_capped(response, conn, cap=cap, deadline=deadline, url=url)
        finally:
            conn.close()
    raise FetchRefused(RejectCode.FETCH_FAILED, f"More than {max_redirects} redirects.")


def _read_capped(
    response: http.client.HTTPResponse, conn: http.client.HTTPConnection, *, cap: int, deadline: float, url: str
) -> bytes:
    """The body, at most ``cap`` bytes, read before ``deadline``.

    ``read1`` returns what has arrived instead of waiting for a full chunk, and each wait is
    bounded by the time left, so a server that trickles a byte at a time is cut off at the
    deadline rather than after its whole body.
    """
    chunks: list[bytes] = []
    got = 0
    while got < cap:
        left = _remaining(deadline, url)
        if conn.sock is not None:
            conn.sock.settimeout(left)
        try:
            chunk = response.read1(min(_CHUNK, cap - got))
        except TimeoutError:
            raise FetchRefused(RejectCode.FETCH_FAILED, f"Fetching {url_display(url)} took too long.") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchRefused(RejectCode.FETCH_FAILED, f"Could not read the body: {exc}") from None
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def url_display(url: str) -> str:
    """A URL as the report and the item name show it: no query string (it may hold a signature)."""
    try:
        parts = urlsplit(str(url))
        shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    except ValueError:
        shown = str(url)
    return display_name(shown or str(url), keep_leading_slash=True)


def candidates_from_urls(urls: Sequence[str]) -> list[ImportCandidate]:
    """Candidates that fetch each URL through the guard when read.

    A URL whose shape is refused is rejected at once; the address checks run at read
    time, in the process that fetches (the web request or the import worker), so the
    answer that is checked is the one that is used.
    """
    out: list[ImportCandidate] = []
    for url in urls:
        name = url_display(url)
        try:
            url_parse(url)
        except FetchRefused as exc:
            out.append(ImportCandidate(name=name, rejection=exc.rejection))
            continue

        def read(cap: int, url: str = url) -> bytes:
            return url_fetch(url, cap=cap)

        out.append(ImportCandidate(name=name, read=read))
    return out
