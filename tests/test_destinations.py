"""The destination policy of the http task is pure: addresses in, a verdict out."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from app.domain.destinations import DestinationPolicy, embedded_ipv4, is_public
from app.settings import SettingsError, load_settings

REFUSED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "10.1.2.3",  # private
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "169.254.169.254",  # link-local: cloud metadata
    "0.0.0.0",  # unspecified
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "255.255.255.255",  # broadcast
    "240.0.0.1",  # reserved
    "192.0.0.8",  # IETF protocol assignments
    "192.0.2.1",  # documentation
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",  # benchmarking
    "192.88.99.1",  # 6to4 relay anycast
    "::",  # unspecified
    "::1",  # loopback
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fe80::1",  # link-local
    "fe80::1%2",  # with a zone
    "fec0::1",  # site-local (deprecated)
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::ffff:0:127.0.0.1",  # SIIT-translated
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::93.184.216.34",
    "2001:db8::1",  # documentation
    "3fff::1",
    "2001::1",  # Teredo
    "2001:2::1",  # benchmarking
    "100::1",  # discard-only
    "5f00::1",  # SRv6 segment identifiers
]

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below carrier-grade NAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "2606:2800:220:1:248:1893:25c8:1946",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",  # IPv4-mapped public address
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
    "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ip_address(address))
    assert not DestinationPolicy().allows("example.org", [ip_address(address)])


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ip_address(address))
    assert DestinationPolicy().allows("example.org", [ip_address(address)])


def test_embedded_ipv4_is_read_from_every_form_that_reaches_it() -> None:
    loopback = ip_address("127.0.0.1")
    for form in ["::ffff:127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1", "2002:7f00:1::"]:
        address = ip_address(form)
        assert address.version == 6
        assert embedded_ipv4(address) == loopback, form
    assert embedded_ipv4(ip_address("2606:2800:220:1::1")) is None


def test_one_refused_address_refuses_the_host() -> None:
    public, private = ip_address("93.184.216.34"), ip_address("10.1.2.3")
    assert DestinationPolicy().allows("mixed.example", [public])
    assert not DestinationPolicy().allows("mixed.example", [public, private])
    assert not DestinationPolicy().allows("mixed.example", [private, public])
    assert not DestinationPolicy().allows("nothing.example", [])


def test_allow_list_admits_listed_addresses_networks_and_host_names() -> None:
    policy = DestinationPolicy.parse(" 10.1.2.3 , 192.168.0.0/16,fd00::/8, Internal.Example. ,")
    assert policy.hosts == {"internal.example"}
    assert policy.allows("x.example", [ip_address("10.1.2.3")])
    assert not policy.allows("x.example", [ip_address("10.1.2.4")])
    assert policy.allows("x.example", [ip_address("192.168.77.1"), ip_address("8.8.8.8")])
    assert policy.allows("x.example", [ip_address("fd00::5")])
    assert policy.allows("x.example", [ip_address("::ffff:192.168.0.9")])  # mapped form too
    assert not policy.allows("x.example", [ip_address("192.168.0.9"), ip_address("127.0.0.1")])
    # A mapped network is the IPv4 network it stands for.
    assert DestinationPolicy.parse("::ffff:10.0.0.0/104").allows("x", [ip_address("10.9.8.7")])
    # A listed name is allowed whatever it resolves to, in any letter case, with a final dot.
    for name in ["internal.example", "INTERNAL.example", "internal.example."]:
        assert policy.allows(name, [ip_address("127.0.0.1"), ip_address("169.254.169.254")])
    # A name is not its address, nor its subdomains.
    assert not policy.allows("127.0.0.1", [ip_address("127.0.0.1")])
    assert not policy.allows("a.internal.example", [ip_address("127.0.0.1")])


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "http://internal.example", "a b", "127.1", "2130706433", "-x.example"]
)
def test_a_bad_allow_list_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name"):
        DestinationPolicy.parse(f"localhost,{entry}")
    with pytest.raises(SettingsError, match="HTTP_TASK_ALLOW"):
        load_settings(http_task_allow=entry)


def test_settings_hand_over_the_policy() -> None:
    settings = load_settings(http_task_allow="localhost,10.0.0.0/8")
    assert settings.http_task_policy.allows("localhost", [ip_address("127.0.0.1")])
    assert settings.http_task_policy.allows("db.example", [ip_address("10.9.9.9")])
    assert not load_settings().http_task_policy.allows("localhost", [ip_address("127.0.0.1")])
