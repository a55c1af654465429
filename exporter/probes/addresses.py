"""One spelling per destination, for probe targets and `probe.allowed_targets`.

The resolver behind getaddrinfo (glibc's inet_aton) reads `127.1`, `2130706433`,
`0x7f.0.0.1` and `0177.0.0.1` as IPv4 addresses; the kernel sends to `::ffff:127.0.0.1`
over IPv4 and to `0.0.0.0` or `::` on this host. An allow list can only be matched
soundly when each destination has one form, so: IPv4 is four decimal numbers, an
IPv4-mapped IPv6 address is the IPv4 address it reaches, and the unspecified addresses
are no destination at all.
"""

from __future__ import annotations

import ipaddress
import re

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A label the resolver reads as a number (decimal, octal with a leading 0, or 0x hex).
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class AddressError(ValueError):
    """Not a usable spelling of a destination; the message says what to write instead."""


def canonical(ip: IpAddress) -> IpAddress:
    """The address packets to `ip` actually reach: IPv4-mapped IPv6 becomes IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_numeric_name(host: str) -> bool:
    """Whether the resolver would take `host` for an IPv4 address rather than look it up:
    its last label is a number (no top-level domain is, so no real name is refused)."""
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.match(last))


def destination(ip: IpAddress) -> IpAddress:
    """`ip` as a probe destination: canonical, never the unspecified address."""
    ip = canonical(ip)
    if ip.is_unspecified:
        raise AddressError(f"{ip} means this host, not a probe destination")
    return ip


def parse_literal(host: str) -> IpAddress | None:
    """The destination an address literal names; None when `host` is a host name.

    Raises AddressError for another spelling of an IPv4 address, a zone id, or the
    unspecified address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if is_numeric_name(host):
            raise AddressError("write an IPv4 address as four decimal numbers (a.b.c.d)") from None
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise AddressError("an IPv6 zone id (%...) is not accepted")
    return destination(ip)


def parse_network(text: str) -> IpNetwork | None:
    """An allow-list network; None when `text` is not one (a host name, perhaps).

    Raises AddressError for networks that would never match a canonical destination."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_IPV4_MAPPED):
        raise AddressError("write an IPv4-mapped network as IPv4 (a.b.c.d/n)")
    if net.num_addresses == 1 and net.network_address.is_unspecified:
        everything = "0.0.0.0/0" if net.version == 4 else "::/0"
        raise AddressError(f"{text} is no destination; {everything} allows every address")
    return net
