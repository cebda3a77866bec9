"""The client's address: the peer's, or behind trusted proxies the right-most address of
X-Forwarded-For that is not one of them (gateway/addresses.py)."""

import pytest

from gateway.addresses import address_key, client_address


def _meta(peer, forwarded=None):
    meta = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return meta


def test_without_trusted_proxies_it_is_the_peer_whatever_the_header_says(settings):
    settings.TRUSTED_PROXIES = []

    assert client_address(_meta("127.0.0.1", "192.0.2.1")) == "127.0.0.1"


def test_from_a_trusted_proxy_it_is_the_address_the_proxy_appended(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]

    assert client_address(_meta("127.0.0.1", "10.0.0.66, 192.0.2.1")) == "192.0.2.1"


def test_it_walks_past_every_trusted_proxy_from_the_right(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]

    address = client_address(_meta("127.0.0.1", "198.51.100.9, 192.0.2.1, 10.1.2.3"))

    assert address == "192.0.2.1"


def test_a_peer_that_is_not_trusted_is_the_client_even_with_the_header(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]

    assert client_address(_meta("203.0.113.5", "192.0.2.1")) == "203.0.113.5"


@pytest.mark.parametrize("forwarded", [None, "", " , "])
def test_a_trusted_proxy_without_a_forwarded_address_is_counted_itself(settings, forwarded):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]

    assert client_address(_meta("127.0.0.1", forwarded)) == "127.0.0.1"


def test_junk_in_the_header_stops_the_walk_at_the_last_trusted_hop(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]

    assert client_address(_meta("127.0.0.1", "192.0.2.1, not-an-address, 10.1.2.3")) == "10.1.2.3"


def test_ipv6_clients_are_counted_by_their_64_bit_prefix(settings):
    settings.TRUSTED_PROXIES = []

    first = address_key(_meta("2001:db8:1:2::1"))
    second = address_key(_meta("2001:db8:1:2:ffff::9"))

    assert first == second == "2001:db8:1:2::/64"
    assert address_key(_meta("192.0.2.1")) == "192.0.2.1"
