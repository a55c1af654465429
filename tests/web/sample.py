"""Fixed LoginsViews for the /sessions page's tests (golden files, browser, docs screenshot).

SAMPLE: what a small setup-ipsec-vpn style server shows: two PSK clients, two clients of
one login behind one NAT, a peering router (a required login), and ended sessions, one
of them vanished (pppd killed). HOSTILE: logins and identities a client may choose to
break the page.
"""

from __future__ import annotations

from exporter.logins.model import EndedSession, LiveSession, LoginsView, LoginTotals

#: 2026-12-03 08:00:00 UTC.
AT = 1_796_284_800.0


def live(
    login: str,
    iface: str,
    public: str,
    inner: str,
    ago: float,
    rx: int,
    tx: int,
    rate: tuple[float, float] | None = None,
    conn: str = "l2tp-psk",
    identity: str | None = None,
) -> LiveSession:
    return LiveSession(
        login=login,
        interface=iface,
        conn=conn,
        ike_identity=public if identity is None else identity,
        public_address=public,
        inner_address=inner,
        connected_since=AT - ago,
        receive_bytes=rx,
        transmit_bytes=tx,
        receive_rate=None if rate is None else rate[0],
        transmit_rate=None if rate is None else rate[1],
    )


def ended(
    login: str,
    iface: str,
    public: str,
    inner: str,
    start_ago: float,
    length: float,
    rx: int,
    tx: int,
    how: str = "hook",
) -> EndedSession:
    return EndedSession(
        login=login,
        interface=iface,
        public_address=public,
        inner_address=inner,
        started_at=AT - start_ago,
        ended_at=AT - start_ago + length,
        duration_seconds=length,
        receive_bytes=rx,
        transmit_bytes=tx,
        how=how,
    )


# fmt: off
SAMPLE = LoginsView(
    at=AT,
    live=(
        live("alice", "ppp0", "198.51.100.23", "192.168.42.10", 2 * 3600 + 754,
             48_213_577, 912_384_211, (18_432.4, 1_254_003.9)),
        live("bob", "ppp1", "203.0.113.7", "192.168.42.11", 312, 1_048_576, 5_242_880,
             (512.0, 2_048.0), identity="192.168.1.20"),
        live("bob", "ppp3", "203.0.113.7", "192.168.42.13", 45, 20_480, 61_440, None,
             identity="192.168.1.21"),
        live("peer-sn1", "ppp2", "192.0.2.44", "10.70.0.2", 5 * 86400 + 3 * 3600 + 17 * 60,
             7_318_200_011, 6_902_114_876, (95_000.0, 88_250.5), conn="l2tp-peering"),
    ),
    ended=(
        ended("carol", "ppp4", "198.51.100.99", "192.168.42.14", 1800, 1200.0, 3_402_112,
              45_118_003),
        ended("alice", "ppp0", "198.51.100.23", "192.168.42.10", 4 * 3600, 3600.0 + 1432,
              12_000_111, 250_331_870),
        ended("dave", "ppp5", "192.0.2.200", "192.168.42.15", 6 * 3600, 95.0, 8_192, 4_096,
              how="vanished"),
    ),
    totals=(
        LoginTotals("alice", 1, 2, 1, 12_000.0, 60_213_688, 1_162_716_081, 90_000, 800_000,
                    AT - 2 * 3600 - 754, AT - 4 * 3600 + 5032, AT - 6 * 3600),
    ),
    required=(("peer-sn1", True), ("peer-sn2", False)),
)

HOSTILE_LOGINS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "evil\x1b[31m\x00\u202egnp.exe\nsecond line",
    "&amp;-already-escaped",
)

HOSTILE = LoginsView(
    at=AT,
    live=tuple(
        live(login, f"ppp{i}", "198.51.100.1", "192.168.42.2", 60, 1, 2, identity=login,
             conn="<b>conn</b>")
        for i, login in enumerate(HOSTILE_LOGINS)
    ),
    ended=tuple(
        ended(login, f"ppp{i}", "198.51.100.1", "192.168.42.2", 600, 60.0, 1, 2,
              how="<i>how</i>")
        for i, login in enumerate(HOSTILE_LOGINS)
    ),
    totals=(),
    required=((HOSTILE_LOGINS[0], False),),
)

# fmt: on

EMPTY = LoginsView(at=AT, live=(), ended=(), totals=())
