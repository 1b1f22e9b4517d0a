"""Header hygiene for both directions of the proxy (RFC 9110 §7.6.1 hop-by-hop rules)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway itself; a client's copy would be a spoof unless it comes through a trusted proxy.
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"})
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

Headers = list[tuple[bytes, bytes]]


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = HOP_BY_HOP) -> Headers:
    """Drop the headers in `drop` (HOP_BY_HOP and any others: build it once, with `dropping()`) and the headers
    that Connection names. Names are lower-case, as uvicorn and gateway.proxy.http1 deliver them.

    A name is compared with `_` read as `-`: CGI, WSGI and many frameworks map both spellings to one variable
    (HTTP_X_FORWARDED_FOR), so `X_Forwarded_For` would otherwise pass as a spoof of the header dropped here.
    """
    headers = list(headers)
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(_canonical(token.strip().lower()) for token in value.split(b","))
    if named:
        drop = drop | named
    return [(name, value) for name, value in headers if (_canonical(name) if b"_" in name else name) not in drop]


def dropping(*names: Iterable[bytes]) -> frozenset[bytes]:
    """HOP_BY_HOP and `names`: a drop set for strip_hop_by_hop."""
    return HOP_BY_HOP.union(*names)


def _canonical(name: bytes) -> bytes:
    return name.replace(b"_", b"-")


# A random per-process prefix and a counter: unique across workers and replicas, and cheaper than uuid4.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID if it is well formed, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and _VALID_REQUEST_ID.match(value):
            return value.decode("ascii")
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def rewrite_location(location: str, public_prefix: str, upstream_prefix: str, target_netloc: str) -> str:
    """Map a Location the upstream gave for its own paths back to the path the client used."""
    parts = urlsplit(location)
    if parts.scheme and parts.netloc.lower() != target_netloc.lower():
        return location  # a redirect to somewhere else: leave it alone
    path = parts.path
    if not path.startswith("/"):
        return location  # relative reference: already relative to the client's URL
    upstream_prefix = upstream_prefix.rstrip("/")
    if upstream_prefix and not (path == upstream_prefix or path.startswith(upstream_prefix + "/")):
        return location
    rewritten = public_prefix.rstrip("/") + path[len(upstream_prefix) :]
    if parts.query:
        rewritten += "?" + parts.query
    if parts.fragment:
        rewritten += "#" + parts.fragment
    return rewritten or "/"
