"""Plain snapshots of logins: what the pppd hooks recorded and what the login ledger
made of it. No metric objects, no HTML: the users collector and the /sessions page
both read these.

A *login* is the PPP user name a client authenticated with (pppd's PEERNAME). A
*session* is one PPP link of that login, from ip-up to ip-down.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndedRecord:
    """What the shipped ip-down hook wrote when one PPP session ended.

    `name` is the record's file name; it is unique per session end and is how the
    ledger counts each record exactly once.
    """

    name: str
    interface: str
    ifindex: int | None
    login: str
    #: The client's inner (PPP) address and pppd's ipparam (xl2tpd: the L2TP peer's
    #: public address).
    inner_address: str
    ipparam: str
    pppd_pid: int | None
    #: Seconds since the epoch: ip-up's time (from the up record) and ip-down's.
    started_at: float | None
    ended_at: float
    #: pppd's CONNECT_TIME, seconds.
    connect_seconds: float | None
    #: pppd's BYTES_RCVD / BYTES_SENT: received from / sent to the client.
    receive_bytes: int | None
    transmit_bytes: int | None
    #: Read by the hook from /sys/class/net/<if>/statistics when still there; else None.
    receive_packets: int | None = None
    transmit_packets: int | None = None


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One connected client, as the /sessions page shows it."""

    login: str
    interface: str
    conn: str
    #: The IKE identity (charon's remote id / XAuth user, pluto's id or username).
    ike_identity: str
    public_address: str
    inner_address: str
    connected_since: float | None
    receive_bytes: int
    transmit_bytes: int
    #: Bytes per second over the last two readings; None after only one reading.
    receive_rate: float | None
    transmit_rate: float | None


@dataclass(frozen=True, slots=True)
class EndedSession:
    """One ended session, for the page's history (newest first)."""

    login: str
    interface: str
    public_address: str
    inner_address: str
    started_at: float | None
    ended_at: float
    duration_seconds: float | None
    receive_bytes: int
    transmit_bytes: int
    #: "hook" (ip-down recorded its final counts) or "vanished" (the interface went
    #: without an ip-down record, e.g. pppd was killed: last counts seen are kept).
    how: str


@dataclass(frozen=True, slots=True)
class LoginTotals:
    """One login's counters since the exporter started (never backwards)."""

    login: str
    sessions: int
    logins: int
    logouts: int
    connected_seconds: float
    receive_bytes: int
    transmit_bytes: int
    receive_packets: int
    transmit_packets: int
    last_login: float | None
    last_logout: float | None
    #: When this login's series began (OpenMetrics `_created`).
    created: float


@dataclass(frozen=True, slots=True)
class LoginsView:
    """Everything the ledger knows at one moment."""

    at: float
    live: tuple[LiveSession, ...]
    ended: tuple[EndedSession, ...]
    totals: tuple[LoginTotals, ...]
    #: Required logins (names, and the seen logins a required pattern matched) → up.
    required: tuple[tuple[str, bool], ...] = ()
    #: Connected sessions with no login known (no hook record, no IKE user).
    without_login: int = 0
    #: Logins forgotten since the start, by reason ("idle", "limit").
    forgotten: tuple[tuple[str, int], ...] = (("idle", 0), ("limit", 0))
