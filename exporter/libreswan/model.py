"""A plain snapshot of pluto's state: what one round of `ipsec` commands said, no metric
objects. The parsers (`exporter.libreswan.parse`) build it from the commands' text, 4.x
(`000 `/`006 ` line prefixes) and 5.x (none) alike.

Serials (`#N`) are pluto's state numbers: they only grow while pluto runs, so an SA whose
serial is gone from one round to the next has ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IpsecSa:
    """One IPsec SA (Libreswan's "IPsec SA", strongSwan's CHILD SA): a `trafficstatus`
    line, completed from `showstates` when that was read."""

    serial: int
    #: The connection's name as configured (`l2tp-psk`), without the instance.
    connection: str
    #: The instance number of a template connection (`"l2tp-psk"[3]` → 3), else None.
    instance: int | None
    #: The peer's public address as pluto sees it (the NAT router's for a NAT-T client).
    peer: str
    #: XAuth user name (`username=`), None without XAuth.
    username: str | None
    #: The peer's IKE identity (`id='…'`), None when not shown.
    identity: str | None
    #: The inner address pluto leased (`lease=` of XAuth/ModeCfg/IKEv2 pools), else None.
    lease: str | None
    #: When the SA was installed (`add_time=`, seconds since the epoch), else None.
    added_at: float | None
    in_bytes: int
    out_bytes: int
    #: From `showstates`: the IKE SA this IPsec SA was negotiated under, its state
    #: (`STATE_QUICK_R2`, `ESTABLISHED_CHILD_SA`), the SPIs (hex, as pluto shows them)
    #: and the peer's UDP port (4500 for NAT-T); None when showstates was not read.
    ike_serial: int | None = None
    state: str | None = None
    spi_in: str | None = None
    spi_out: str | None = None
    peer_port: int | None = None


@dataclass(frozen=True, slots=True)
class IkeSa:
    """One IKE SA (IKEv1 "ISAKMP SA" or IKEv2 "IKE SA") from `showstates`."""

    serial: int
    connection: str
    instance: int | None
    peer: str
    peer_port: int | None
    #: pluto's state name (`STATE_MAIN_R3`, `ESTABLISHED_IKE_SA`, `STATE_MAIN_R1`, …).
    state: str
    #: "ikev1" or "ikev2" (from the state name).
    version: str
    #: True once the SA is established: pluto's established IKE SA states (`STATE_MAIN_R3`,
    #: `STATE_AGGR_R2`, the XAuth and ModeCfg exchanges that follow them,
    #: `ESTABLISHED_IKE_SA`), the ones briefstatus counts as "authenticated".
    established: bool


@dataclass(frozen=True, slots=True)
class Connection:
    """One loaded connection from `ipsec status`'s connection list: the configured ones
    (templates and permanent connections) and the instances a template spawned."""

    name: str
    instance: int | None
    #: "template" (`%any` peer, spawns instances), "instance" (spawned from a template)
    #: or "permanent" (a fixed peer: a site-to-site or peering link).
    kind: str
    #: "ikev1" or "ikev2" from the `policy:` line, "" when not shown.
    version: str
    #: Serials of the established IKE and IPsec SAs pluto names for it (0: none).
    ike_serial: int
    ipsec_serial: int
    #: The remote host of the connection line (`...192.0.2.7`), None for a template's
    #: `%any` or when pluto hides addresses (`logip=no`). trafficstatus and showstates
    #: name no address for a permanent connection: this is where its peer comes from.
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class PlutoSnapshot:
    taken_at: float
    #: `ipsec --version`, e.g. "5.2" (without "Libreswan ").
    version: str
    ipsec_sas: tuple[IpsecSa, ...]
    ike_sas: tuple[IkeSa, ...]
    connections: tuple[Connection, ...]
    #: `ipsec globalstatus` as key → integer (`total.ike.ikev1.established` → 3); keys
    #: whose value is not an integer are left out.
    global_counters: dict[str, int] = field(default_factory=dict)
    #: Lines of each command's answer the parsers could not read and left out
    #: (command → count, e.g. "trafficstatus" → 1); 0s are listed too.
    skipped_lines: dict[str, int] = field(default_factory=dict)
