"""The client's address: the peer's, unless a trusted proxy forwarded the request."""

from __future__ import annotations

from typing import Any

import pytest

from infra.client_address import client_address, parse_trusted_proxies, request_client_address
from infra.settings import SettingsError, load_settings

PROXIES = parse_trusted_proxies(["10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.7"])


def scope(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 41000) if peer is not None else None,
        "headers": [(name.encode(), value.encode("latin-1")) for name, value in headers],
    }


@pytest.mark.parametrize("proxies", [parse_trusted_proxies([]), PROXIES])
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(proxies) -> None:
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert client_address(scope("203.0.113.9", (header, "198.51.100.1")), proxies) == "203.0.113.9"


def test_with_no_trusted_proxies_even_a_local_peer_is_the_client() -> None:
    # uvicorn's own default trusts 127.0.0.1: anything on the host could pick its address.
    assert (
        client_address(scope("127.0.0.1", ("X-Forwarded-For", "198.51.100.1")), parse_trusted_proxies([]))
        == "127.0.0.1"
    )


def test_a_trusted_proxy_s_forwarded_address_is_the_client() -> None:
    assert client_address(scope("10.1.2.3", ("X-Forwarded-For", "198.51.100.1")), PROXIES) == "198.51.100.1"


def test_the_right_most_untrusted_address_wins_over_what_the_client_made_up() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1, 2.2.2.2"; our proxies appended after it.
    chain = "1.1.1.1, 2.2.2.2, 198.51.100.1, 10.9.9.9"
    assert client_address(scope("10.1.2.3", ("X-Forwarded-For", chain)), PROXIES) == "198.51.100.1"


def test_several_headers_are_one_list_in_order() -> None:
    headers = (("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "198.51.100.1, 10.9.9.9"))
    assert client_address(scope("10.1.2.3", *headers), PROXIES) == "198.51.100.1"


def test_only_x_forwarded_for_is_read_from_a_trusted_proxy() -> None:
    headers = (("Forwarded", "for=1.1.1.1"), ("X-Real-IP", "2.2.2.2"))
    assert client_address(scope("10.1.2.3", *headers), PROXIES) == "10.1.2.3"


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("198.51.100.1:5678", "198.51.100.1"),
        ("[2001:db8::1]:5678", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
    ],
)
def test_forwarded_addresses_are_read_as_proxies_write_them(entry: str, address: str) -> None:
    assert client_address(scope("10.1.2.3", ("X-Forwarded-For", entry)), PROXIES) == address


def test_a_chain_of_trusted_proxies_only_gives_its_first() -> None:
    assert client_address(scope("192.0.2.7", ("X-Forwarded-For", "10.0.0.2, 2001:db8:ffff::9")), PROXIES) == "10.0.0.2"


@pytest.mark.parametrize("junk", ["unknown", "", "not an address", "_hidden"])
def test_what_is_no_address_stops_at_the_last_hop_known(junk: str) -> None:
    chain = f"1.1.1.1, {junk}, 10.9.9.9"
    assert client_address(scope("10.1.2.3", ("X-Forwarded-For", chain)), PROXIES) == "10.9.9.9"


def test_a_peer_that_is_no_address_is_kept_as_is_and_no_peer_is_unknown() -> None:
    assert client_address(scope("testclient", ("X-Forwarded-For", "1.1.1.1")), PROXIES) == "testclient"
    assert client_address(scope(None), PROXIES) == "unknown"


def test_routes_read_what_the_request_context_worked_out() -> None:
    found = scope("10.1.2.3") | {"state": {"client_address": "198.51.100.1"}}
    assert request_client_address(found) == "198.51.100.1"
    assert request_client_address(scope("203.0.113.9", ("X-Forwarded-For", "1.1.1.1"))) == "203.0.113.9"


def test_trusted_proxies_come_from_the_environment() -> None:
    assert load_settings({}).trusted_proxies == []
    settings = load_settings({"HUBBUB_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,fd00::/8"})
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("proxy.internal", r"'proxy.internal' is not an IP address or CIDR network .*host names are not looked up"),
        ("10.0.0.1/8", r"'10.0.0.1/8' has host bits set; write the network as 10.0.0.0/8, or one address alone"),
        ("10.0.0.0/33", r"'10.0.0.0/33' is not an IP address or CIDR network"),
        ("10.0.0.1 10.0.0.2", r"'10.0.0.1 10.0.0.2' is not an IP address"),
        ("*", r"'\*' would trust every address"),
        ("10.0.0.1, 0.0.0.0/0", r"'0.0.0.0/0' would trust every address"),
    ],
)
def test_a_bad_trusted_proxy_is_refused_with_what_to_write(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=rf"^HUBBUB_TRUSTED_PROXIES: {message}"):
        load_settings({"HUBBUB_TRUSTED_PROXIES": value})
