"""The client address behind trusted proxies: X-Forwarded-For is walked from the right, and the first hop that is
not a trusted proxy is the client. Hops to its left were written by the client itself, so they are never believed."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.client_ip import Network, TrustedProxies


def proxies(*cidrs: str) -> TrustedProxies:
    networks: list[Network] = [ipaddress.ip_network(cidr) for cidr in cidrs]
    return TrustedProxies(networks)


LOOPBACK = proxies("127.0.0.1/32")


def test_a_forged_left_hop_is_not_the_client() -> None:
    # The attacker sent "X-Forwarded-For: 6.6.6.6"; the trusted proxy appended the address it saw.
    assert LOOPBACK.client_ip("127.0.0.1", "6.6.6.6, 203.0.113.7") == "203.0.113.7"
    assert LOOPBACK.client_ip("127.0.0.1", "6.6.6.6,1.1.1.1 ,  203.0.113.7") == "203.0.113.7"


def test_several_trusted_hops_are_skipped_from_the_right() -> None:
    chain = proxies("127.0.0.1/32", "10.0.0.0/8")
    # client → 10.0.0.5 (edge) → 10.0.0.9 (ingress) → 127.0.0.1 (sidecar); the attacker forged the first two.
    forwarded = "6.6.6.6, 7.7.7.7, 198.51.100.4, 10.0.0.5, 10.0.0.9"
    assert chain.client_ip("127.0.0.1", forwarded) == "198.51.100.4"
    # An untrusted hop between trusted ones ends the walk there, not at the first untrusted from the left.
    assert chain.client_ip("10.1.1.1", "6.6.6.6, 10.0.0.5, 192.0.2.8, 10.0.0.9") == "192.0.2.8"


def test_an_all_trusted_chain_gives_its_leftmost_hop() -> None:
    chain = proxies("127.0.0.1/32", "10.0.0.0/8")
    assert chain.client_ip("127.0.0.1", "10.0.0.1, 10.0.0.2, 10.0.0.3") == "10.0.0.1"
    assert chain.client_ip("127.0.0.1", "127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        # Garbage is not a trusted proxy, so the walk stops at it: a client cannot hide behind it.
        ("6.6.6.6, not-an-ip", "not-an-ip"),
        ("6.6.6.6, 203.0.113.7, ", "203.0.113.7"),  # empty entries are skipped
        (" , ,203.0.113.7", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7, 127.0.0.1", "203.0.113.7"),
        ("", "127.0.0.1"),  # nothing forwarded: the peer
        (" , ", "127.0.0.1"),
    ],
)
def test_garbage_and_empty_entries(forwarded: str, client: str) -> None:
    assert LOOPBACK.client_ip("127.0.0.1", forwarded) == client


def test_ipv6_hops() -> None:
    chain = proxies("::1/128", "fd00::/8")
    assert chain.client_ip("::1", "2001:db8::6, 2001:db8::7, fd00::1") == "2001:db8::7"


def test_the_header_of_an_untrusted_peer_is_ignored() -> None:
    assert LOOPBACK.client_ip("198.51.100.9", "203.0.113.7") == "198.51.100.9"
    assert LOOPBACK.client_ip("127.0.0.1", None) == "127.0.0.1"
    # No trusted proxies configured: nobody's header is believed, not even loopback's.
    assert proxies().client_ip("127.0.0.1", "203.0.113.7") == "127.0.0.1"
    assert not proxies().is_trusted("127.0.0.1")
    assert LOOPBACK.is_trusted("127.0.0.1")
    assert not LOOPBACK.is_trusted("garbage")
