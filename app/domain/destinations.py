"""Which network destinations a tenant's `http` job may reach: pure functions, no I/O.

An address is *public* when it is a global unicast address that no IANA special-purpose
registry sets aside. Everything else is refused: loopback, private (RFC 1918, IPv6 unique
local), link-local (where cloud metadata services listen), carrier-grade NAT, multicast,
unspecified, documentation, benchmarking and reserved ranges. IPv6 forms that carry an IPv4
address (IPv4-mapped, SIIT-translated, NAT64 well-known prefix, 6to4) are judged by the IPv4
address they carry; other IPv6 outside global unicast (2000::/3), IPv4-compatible addresses
included, are refused.

An operator admits internal destinations with an allow-list (HTTP_TASK_ALLOW): a host name
on it is allowed whatever it resolves to; an address inside a listed network (a lone address
is a network of one) is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_REFUSED_V4 = tuple(
    IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, home of cloud metadata services
        "172.16.0.0/12",  # private (RFC 1918)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private (RFC 1918)
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast address
    )
)

_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_REFUSED_V6 = tuple(
    IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID...
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_MAPPED = IPv6Network("::ffff:0:0/96")
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_NAT64 = IPv6Network("64:ff9b::/96")  # the well-known prefix (RFC 6052)
_SIX_TO_FOUR = IPv6Network("2002::/16")

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, in the forms that reach it; else None."""
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def is_public(address: IPAddress) -> bool:
    """True for an address any tenant may reach: global unicast, set aside for nothing."""
    if isinstance(address, IPv4Address):
        return not any(address in network for network in _REFUSED_V4)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    return address in _GLOBAL_UNICAST_V6 and not any(address in n for n in _REFUSED_V6)


def normalize_host(host: str) -> str:
    """A host name as compared with the allow-list: lower case, without a final dot."""
    return host.strip().lower().rstrip(".")


def _host_name(entry: str) -> str:
    name = normalize_host(entry)
    labels = name.split(".")
    # An all-digit last label would be an address in disguise ("127.1"), not a DNS name.
    if not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"'{entry}' is neither a host name, an IP address nor a CIDR network")
    return name


def _unmapped(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped network (::ffff:10.0.0.0/104) as the IPv4 network it means."""
    if isinstance(network, IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        return IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


@dataclass(frozen=True)
class DestinationPolicy:
    """The allow-list: host names and networks an operator trusts beyond public addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: str) -> DestinationPolicy:
        """Read a comma-separated list of host names, IP addresses and CIDR networks.

        Raises ValueError naming the first entry that is none of these."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (part.strip() for part in allow.split(",")):
            if not entry:
                continue
            try:
                networks.append(_unmapped(ip_network(entry, strict=False)))
            except ValueError:
                hosts.add(_host_name(entry))
        return cls(frozenset(hosts), tuple(networks))

    def allows_address(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and (embedded := embedded_ipv4(address)):
            candidates.append(embedded)
        return any(c in network for c in candidates for network in self.networks)

    def allows(self, host: str, addresses: Sequence[IPAddress]) -> bool:
        """May a request to `host`, which resolved to `addresses`, go ahead? Only when the
        host name is on the allow-list, or when every one of its addresses is allowed."""
        if normalize_host(host) in self.hosts:
            return True
        return bool(addresses) and all(self.allows_address(a) for a in addresses)
