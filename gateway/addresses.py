"""The address a request came from, believing X-Forwarded-For only from trusted proxies.

Behind a reverse proxy every connection comes from the proxy: counted by the peer's address,
one client's failed logins would lock out everyone. The proxy appends the address it saw
to X-Forwarded-For; anything left of that was written by the client and may be forged. So
the header is read from the right, past every address in TRUSTED_PROXIES, and the first
address that is not a trusted proxy is the client's. With TRUSTED_PROXIES empty (the
default) the header is ignored: a client talking to the process directly could otherwise
name any address it likes.
"""

import functools
import ipaddress

from django.conf import settings

# IPv6 clients usually hold a whole /64: counting per address would give each of them
# 2**64 counters.
IPV6_PREFIX_LENGTH = 64


def client_address(meta):
    """Return the client's address for a request's META (REMOTE_ADDR, X-Forwarded-For)."""
    peer = meta.get("REMOTE_ADDR") or ""
    proxies = _networks(tuple(settings.TRUSTED_PROXIES))
    if not _is_trusted(peer, proxies):
        return peer
    forwarded = [
        part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    address = peer
    for hop in reversed(forwarded):
        if _parse(hop) is None:
            # Not an address: whatever wrote it is not a proxy this gateway trusts, so
            # nothing further left can be believed either.
            break
        address = hop
        if not _is_trusted(hop, proxies):
            break
    return address


def address_key(meta):
    """Return a counter's key for the client's address: the address, or its /64 for IPv6."""
    address = client_address(meta)
    parsed = _parse(address)
    if parsed is not None and parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX_LENGTH}", strict=False))
    return address


@functools.lru_cache(maxsize=8)
def _networks(cidrs):
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def _parse(address):
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _is_trusted(address, proxies):
    parsed = _parse(address)
    if parsed is None:
        return False
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in proxies)
