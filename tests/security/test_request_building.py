"""A property of the proxy's request building, end to end through uvicorn and the gateway: for any path, query and
header set a client may legally send, what reaches the upstream parses (with h11) into exactly one request with
the normalised target and no header the client did not send beyond the gateway's own."""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.paths import InvalidPath, normalize_path
from tests.security.conftest import ThreadedGateway, threaded_gateway

UNRESERVED = string.ascii_letters + string.digits + "-._~"
SUB_DELIMS = "!$&'()*+,;="
RAW_EXTRA = '"<>^`{|}'  # not allowed raw by RFC 3986, sent raw by some clients: encoded on the way through
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
#: Headers the gateway sets, drops or acts on: the property is about the ones it passes through.
SPECIAL = {
    "host", "content-length", "transfer-encoding", "connection", "te", "trailer", "upgrade", "keep-alive", "expect",
    "proxy-connection", "proxy-authenticate", "proxy-authorization", "x-forwarded-for", "x-forwarded-proto",
    "x-forwarded-host", "x-request-id", "x-api-key", "x-user-id", "x-user-tier", "x-gateway-user-id",
    "x-gateway-tier", "x-gateway-identity",
}  # fmt: skip
ADDED = {
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"x-gateway-user-id",
    b"x-gateway-tier", b"x-gateway-identity",
}  # fmt: skip

escape = st.integers(0, 255).map(lambda byte: f"%{byte:02x}" if byte % 2 else f"%{byte:02X}")
segment = st.lists(
    st.one_of(st.sampled_from(list(UNRESERVED + SUB_DELIMS + ":@" + RAW_EXTRA)), escape, st.sampled_from([".", ".."])),
    max_size=6,
).map("".join)
path = st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts))
query = st.one_of(
    st.just(""), st.text(alphabet=UNRESERVED + SUB_DELIMS + ":@/?%", min_size=1, max_size=20).map(lambda q: "?" + q)
)
name = st.text(alphabet=TOKEN, min_size=1, max_size=12).filter(
    lambda n: n.lower().replace("_", "-") not in SPECIAL and not n.lower().startswith("proxy-")
)
value = st.text(alphabet=string.printable.strip() + " \t", max_size=30).map(lambda v: v.strip(" \t"))
headers = st.lists(st.tuples(name, value), max_size=8)


@pytest.fixture(scope="module")
def gateway() -> Iterator[ThreadedGateway]:
    with threaded_gateway("- {name: all, match: {path_prefix: /}, upstream: up}", "allow_encoded_slashes: true") as gw:
        yield gw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=path, query=query, headers=headers)
def test_one_request_reaches_the_upstream_with_the_normalised_target_and_only_the_clients_headers(
    gateway: ThreadedGateway, path: str, query: str, headers: list[tuple[str, str]]
) -> None:
    upstream = gateway.upstream
    before = len(upstream.requests)
    head = f"GET {path}{query} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
    head += "".join(f"{key}: {val}\r\n" for key, val in headers)
    response = gateway.exchange(head.encode("latin-1") + b"\r\n")
    status = int(response.split(b" ", 2)[1])
    try:
        expected_path = normalize_path(path.encode(), allow_encoded_slashes=True).encoded
    except InvalidPath:
        assert status == 400, response[:300]
        assert len(upstream.requests) == before
        return

    assert status == 200, response[:300]
    assert upstream.errors == []
    assert len(upstream.requests) == before + 1  # exactly one request, however the bytes were spelled
    received = upstream.requests[-1]
    assert received.target == expected_path + query.encode()
    sent = [(key.lower().encode(), val.encode()) for key, val in headers]
    for key in {key for key, _ in sent}:
        assert received.headers(key) == [val for k, val in sent if k == key]
    assert set(received.names) <= {key for key, _ in sent} | ADDED
