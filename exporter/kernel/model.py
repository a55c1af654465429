"""Plain snapshots of what the kernel said: no netlink messages, no metric objects.

Times are absolute (seconds since the epoch); counters are the kernel's own (64-bit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficStats:
    """The counters interfaces and L2TP tunnels and sessions all have."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0


@dataclass(frozen=True)
class LinkStats(TrafficStats):
    """An interface's 64-bit counters (IFLA_STATS64)."""

    rx_dropped: int = 0
    tx_dropped: int = 0


@dataclass(frozen=True)
class PppInterface:
    """A ppp interface: one PPP session's network side."""

    name: str
    index: int
    #: Our end (IFA_LOCAL) and the client's inner address (IFA_ADDRESS); "" before IPCP.
    local_address: str
    peer_address: str
    #: When its IPv4 address was set, i.e. when IPCP came up; None without an address.
    up_since: float | None
    stats: LinkStats


@dataclass(frozen=True)
class L2tpStats(TrafficStats):
    """A kernel L2TP tunnel's or session's counters (L2TP_ATTR_STATS)."""


@dataclass(frozen=True)
class L2tpTunnel:
    tunnel_id: int
    peer_tunnel_id: int
    #: "udp" or "ip" (L2TP over UDP or directly over IP).
    encap: str
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    stats: L2tpStats


@dataclass(frozen=True)
class L2tpSession:
    tunnel_id: int
    session_id: int
    peer_session_id: int
    #: The ppp interface carrying the session; "" when the kernel does not say.
    interface: str
    stats: L2tpStats


@dataclass(frozen=True)
class L2tpSnapshot:
    tunnels: tuple[L2tpTunnel, ...]
    sessions: tuple[L2tpSession, ...]


@dataclass(frozen=True)
class XfrmState:
    """One SA in the kernel (one direction of an ESP/AH/IPComp pair)."""

    src: str
    dst: str
    spi: int
    proto: str
    mode: str
    reqid: int
    #: Current lifetime counters: bytes and packets through this SA since it was added.
    bytes: int
    packets: int
    added_at: float
    replay_window_errors: int
    replay_errors: int
    integrity_errors: int
    #: NAT-T UDP encapsulation ports, None when the SA is not encapsulated.
    encap_sport: int | None = None
    encap_dport: int | None = None

    @property
    def spi_hex(self) -> str:
        return f"0x{self.spi:08x}"


@dataclass(frozen=True)
class XfrmPolicy:
    direction: str
    priority: int
    index: int
    src: str
    dst: str
    proto: int
    action: str


@dataclass(frozen=True)
class XfrmSnapshot:
    states: tuple[XfrmState, ...]
    policies: tuple[XfrmPolicy, ...]


@dataclass(frozen=True)
class PppHookRecord:
    """What the shipped pppd ip-up hook wrote for one interface."""

    interface: str
    #: The interface index the hook saw; a record whose index differs from the live
    #: interface's belongs to an earlier session on a reused name.
    ifindex: int | None
    #: The name the peer authenticated with (pppd's PEERNAME).
    peer_name: str
    local_address: str
    peer_address: str
    #: pppd's ipparam: xl2tpd passes the L2TP peer's address there.
    ipparam: str
    pppd_pid: int | None
    up_since: float | None
    #: The kernel L2TP tunnel and session pppd was handed (its pppol2tp_* options).
    l2tp_tunnel_id: int | None = None
    l2tp_session_id: int | None = None


@dataclass(frozen=True)
class L2tpIpsecSession:
    """One client, joined across the layers: ppp interface, L2TP, IKE SA, hook."""

    interface: str
    user: str
    ppp_user: str
    ike_user: str
    conn: str
    public_address: str
    inner_address: str
    ike_uniqueid: str
    started_at: float | None
