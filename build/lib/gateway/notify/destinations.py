"""Where a destination a user chose (a webhook URL in their preferences) may point, and how it is written down.

A user-supplied URL must not make the gateway a proxy into its own network (SSRF). `PublicAddresses` allows
only globally routable unicast addresses: loopback, private, link-local, CGNAT, multicast, unspecified,
reserved and documentation ranges are refused, in every spelling (`localhost`, `2130706433`, `0x7f.1`, `[::1]`,
`[::ffff:127.0.0.1]`, NAT64 or 6to4 addresses embedding one, a DNS name resolving to one). The check runs on
the addresses the name resolves to at the moment of sending, and the request then goes to exactly the address
checked (Host and TLS SNI keep the name), so a name that re-binds between check and connect gains nothing.
Operators who need internal targets list networks in the channel's `allow_networks`.

Errors shown to whoever reads a delivery's status never carry network details (no port-scan oracle), and URLs
written into statuses, the DLQ or logs lose their userinfo and query string (`redact_url`), where tokens live.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 2.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


class DestinationError(ValueError):
    """The destination is not allowed (or not a URL at all); the message is safe to show its owner."""


def parse_http_url(url: str) -> SplitResult:
    """An http(s) URL with a host, no credentials, no whitespace, at most MAX_URL_LENGTH characters."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise DestinationError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise DestinationError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise DestinationError("must not carry credentials (user:password@)")
    if port == 0:
        raise DestinationError("must not use port 0")
    return parts


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling inet_aton accepts (`0x7f.1`, `2130706433`)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without userinfo."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{netloc}"


def redact_url(url: str) -> str:
    """The URL without userinfo, query and fragment: safe for a status, the DLQ or a log line."""
    base = origin(url)
    return base if base == "<invalid URL>" else base + urlsplit(url).path


def redact_urls(text: str) -> str:
    """Every URL in `text` redacted."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Pinned:
    """A URL rewritten to the one address that was checked, with what keeps the request meaning the name."""

    url: str
    host_header: str
    #: For https: the name TLS verifies the certificate against.
    sni_hostname: str | None


class PublicAddresses:
    def __init__(self, allow: Sequence[Network] = (), *, resolver: Resolver | None = None) -> None:
        self.allow = tuple(allow)
        self.resolver: Resolver = resolver or _getaddrinfo

    def allowed(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allow):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            embedded = address.ipv4_mapped or address.sixtofour
            if embedded is None and address in _NAT64:
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            if embedded is None and address.teredo is not None:
                embedded = address.teredo[1]
            if embedded is not None and not self.allowed(embedded):
                return False
        return address.is_global and not address.is_multicast

    def check_url(self, url: str) -> SplitResult:
        """What can be checked without the network: the URL's shape, and its host when it is an address or
        a name that always means this machine."""
        parts = parse_http_url(url)
        host = (parts.hostname or "").rstrip(".").lower()
        address = literal_address(host)
        if address is None and (host == "localhost" or host.endswith(".localhost")):
            address = _LOOPBACK  # RFC 6761: always this machine, whatever a resolver says
        if address is not None and not self.allowed(address):
            raise DestinationError("must not point at a loopback, private or otherwise internal address")
        return parts

    async def pin(self, url: str) -> Pinned:
        """Resolve the URL's host, refuse it unless every address is allowed, and aim the URL at one of them."""
        parts = self.check_url(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = literal_address(host)
        if address is None:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    found = await self.resolver(host, port)
                addresses = [ipaddress.ip_address(item.split("%", 1)[0]) for item in found]
            except (OSError, TimeoutError, ValueError):
                raise DestinationError("the host could not be resolved") from None
            if not addresses:
                raise DestinationError("the host could not be resolved")
            # Every address, not just the first: a name that also resolves inside must not be usable at all.
            if not all(self.allowed(item) for item in addresses):
                raise DestinationError("the host resolves to a loopback, private or otherwise internal address")
            address = addresses[0]
        netloc = f"[{address}]" if address.version == 6 else str(address)
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        named = literal_address(host) is None
        return Pinned(pinned, parts.netloc, host if parts.scheme == "https" and named else None)


def networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)
