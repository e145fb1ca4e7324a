"""The client's address: the one answer rate limits and logs use.

It is the TCP peer's address, unless that peer is one of ``HUBBUB_TRUSTED_PROXIES``: then it is
the right-most address of ``X-Forwarded-For`` that is not a trusted proxy itself. Each proxy
appends the address it was connected from, so reading from the right, every entry up to the
first untrusted one was written by a proxy we trust, and that one is the client as our proxies
saw it; whatever is left of it the client may have made up (``X-Forwarded-For: 1.2.3.4`` sent by
a client reaches us as ``1.2.3.4, <its real address>``).

Only ``X-Forwarded-For`` is read (what nginx's ``$proxy_add_x_forwarded_for``, HAProxy's
``option forwardfor`` and cloud load balancers append). ``Forwarded`` and ``X-Real-IP`` are
ignored, even from a trusted proxy: a proxy that manages one header passes the others through as
the client sent them, so reading several would let a client pick its own address.

With no trusted proxies (the default) no header is read at all. The server must not rewrite the
peer itself: ``hubbub serve`` runs uvicorn with ``proxy_headers=False`` (uvicorn's default trusts
``X-Forwarded-For`` from 127.0.0.1, so anything on the same host could pick its address).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR = b"x-forwarded-for"
STATE_KEY = "client_address"
UNKNOWN = "unknown"
MAX_HOPS = 32
"""Entries of ``X-Forwarded-For`` looked at, from the right; no real chain of proxies is longer."""


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed (empty: nobody's)."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def parse_trusted_proxies(items: Iterable[str]) -> TrustedProxies:
    """``HUBBUB_TRUSTED_PROXIES``' items (IP addresses or CIDR networks); ``ValueError`` with a
    message that says what is wrong with the first bad one."""
    networks = []
    for item in items:
        if item in ("*", "0.0.0.0/0", "::/0"):
            raise ValueError(
                f"{item!r} would trust every address, and so let any client pick its own; "
                "name your proxies' addresses or networks"
            )
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            if "host bits" in str(exc):  # 10.0.0.1/8: a typo for the address or for the network?
                raise ValueError(
                    f"{item!r} has host bits set; write the network as "
                    f"{ipaddress.ip_network(item, strict=False)}, or one address alone"
                ) from None
            raise ValueError(
                f"{item!r} is not an IP address or CIDR network (such as 10.0.0.5, "
                "10.0.0.0/8 or fd00::/8; host names are not looked up)"
            ) from None
    return TrustedProxies(networks)


def client_address(scope: Mapping[str, Any], trusted: TrustedProxies) -> str:
    """The client's address for an ASGI ``scope`` (see the module's docstring); ``unknown``
    when the server gives no peer. Canonical text (``2001:db8::1``, IPv4-mapped as IPv4)."""
    client = scope.get("client")
    peer = _address(client[0]) if client else None
    if peer is None:
        return str(client[0])[:64] if client and client[0] else UNKNOWN
    if not trusted or peer not in trusted:
        return str(peer)
    chain = _forwarded_for(scope.get("headers", ()))
    for entry in reversed(chain[-MAX_HOPS:]):
        hop = _address(entry)
        if hop is None:
            break  # a trusted proxy wrote something that is no address: the last one we know came from
        peer = hop
        if hop not in trusted:
            break
    return str(peer)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Forwarded-For`` entry in order (several headers read as one list, RFC 9110 5.3)."""
    entries: list[str] = []
    for name, value in headers:
        if name.lower() == FORWARDED_FOR:
            entries.extend(part.strip() for part in value.decode("latin-1").split(","))
    return entries


@functools.lru_cache(maxsize=4096)  # the same few peers ask again and again (3 us a parse, per request)
def _address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:5678``); None for anything else."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def request_client_address(scope: Mapping[str, Any]) -> str:
    """The address ``RequestContext`` worked out for this request (infra/logging.py), for routes;
    the peer's own when the app runs without it (a test's bare app)."""
    found = scope.get("state", {}).get(STATE_KEY)
    return found if found is not None else client_address(scope, TrustedProxies())
