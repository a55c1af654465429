"""What pluto's polled state says happened between two rounds: IPsec SAs that came up,
went down (drops) or were rekeyed, and traffic totals that survive both.

pluto has no event stream, but its state serials (`#N`) only grow, so comparing two rounds
is exact about which IPsec SAs ended: a serial that was there and is gone has ended, once.
How it ended is told by what replaced it:

- **rekey**: a newer IPsec SA (higher serial) of the same connection instance and peer
  is up in the round that lost the old one. Rekeys by pluto (and by peers) are
  make-before-break: the new SA is installed before the old is deleted. A restarted pluto
  numbers from #1 again, so the SAs its clients set up again are not replacements.
- **down** (a drop): nothing of that instance and peer is left. A client that
  disconnects and connects again gets a new instance (`"l2tp-psk"[4]`), so a
  break-before-make reconnect is a down and an up, never a rekey.
- **up**: a serial not seen before that replaces nothing.

pluto's own totals (`ipsec globalstatus`) start from zero when pluto restarts; the ledger
carries them on, so they never go backwards while the exporter runs either.

Traffic: the bytes of ended SAs (their last reading, or the kernel's final count when
`record_final` gets one from the XFRM delete notification) are added to per-connection and
per-user totals; live SAs' bytes are added at reading time, so the totals never go
backwards while the exporter runs.

An IPsec SA that came and went entirely between two rounds is not seen here; the XFRM
notifications (`exporter.kernel.xfrm_events`) see those.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from exporter.libreswan.model import IpsecSa, PlutoSnapshot

log = logging.getLogger("exporter.libreswan.ledger")

EVENTS = ("up", "down", "rekey")


def user_of(sa: IpsecSa) -> str:
    """The person behind an IPsec SA as pluto knows it: the XAuth user name, else the IKE
    identity, else the peer's address (PSK clients identify by address)."""
    return sa.username or sa.identity or sa.peer


def _tunnel(sa: IpsecSa) -> tuple[str, int | None, str]:
    return (sa.connection, sa.instance, sa.peer)


def _same_sa(a: IpsecSa, b: IpsecSa) -> bool:
    # A restarted pluto numbers its states from #1 again: a serial is the same SA only
    # with the same tunnel and install time.
    # pluto can print add_time=0 (read as None) on a new SA's first report, before it
    # asked the kernel: an unknown install time matches any.
    if _tunnel(a) != _tunnel(b):
        return False
    return a.added_at is None or b.added_at is None or a.added_at == b.added_at


def _advance(last: int, now: int) -> int:
    """Bytes between two printed counts of one SA."""
    if now >= last:
        return now - last
    if now == 0:
        return 0  # not read this round: nothing known to have moved
    if last < 2**32:
        return now + 2**32 - last  # pluto 4.x's 32-bit inBytes wrapped
    return 0


@dataclass(frozen=True)
class Traffic:
    in_bytes: int = 0
    out_bytes: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.in_bytes + other.in_bytes, self.out_bytes + other.out_bytes)


@dataclass(frozen=True)
class LedgerReadings:
    """Counts since the exporter started, for rendering."""

    #: (connection, event) → count.
    events: dict[tuple[str, str], int]
    #: connection → bytes of ended SAs plus live ones.
    connection_traffic: dict[str, Traffic]
    #: (connection, user) → bytes of ended SAs plus live ones.
    user_traffic: dict[tuple[str, str], Traffic]
    #: connection → when one of its IPsec SAs last came up or went down.
    last_change: dict[str, float]
    #: Users whose totals were not kept because max_users was reached.
    untracked_users: int
    #: pluto's globalstatus counters, carried over pluto's restarts (see `PlutoLedger`).
    global_counters: dict[str, int] = field(default_factory=dict)


@dataclass
class PlutoLedger:
    """Fed each round's snapshot (`observe`); read with `readings`."""

    #: The most (connection, user) totals kept; beyond it new users are counted, not kept.
    max_users: int = 10000
    _live: dict[int, IpsecSa] = field(default_factory=dict)
    _events: Counter[tuple[str, str]] = field(default_factory=Counter)
    _ended_conn: dict[str, Traffic] = field(default_factory=dict)
    _ended_user: dict[tuple[str, str], Traffic] = field(default_factory=dict)
    _last_change: dict[str, float] = field(default_factory=dict)
    #: Final counts the kernel reported for serials not yet seen to end (by serial).
    _finals: dict[int, Traffic] = field(default_factory=dict)
    _untracked_users: int = 0
    _first_round: bool = True
    #: globalstatus: the last value pluto said, and what earlier pluto processes counted.
    _counter_last: dict[str, int] = field(default_factory=dict)
    _counter_base: dict[str, int] = field(default_factory=dict)
    #: The byte counts pluto last printed for each live SA (before `_monotonic`).
    _raw: dict[int, tuple[int, int]] = field(default_factory=dict)

    def observe(self, snapshot: PlutoSnapshot) -> None:
        """Compare this round with the last. The first round sets the baseline: the SAs
        up when the exporter started are not counted as `up` events."""
        now = snapshot.taken_at or time.time()
        current = {sa.serial: self._monotonic(sa) for sa in snapshot.ipsec_sas}
        # The newest serial per tunnel: a replacement is always numbered after the SA it
        # replaces, while a restarted pluto numbers from #1 again.
        newest: dict[tuple[str, int | None, str], int] = {}
        for sa in snapshot.ipsec_sas:
            newest[_tunnel(sa)] = max(newest.get(_tunnel(sa), 0), sa.serial)
        if not self._first_round:
            for serial, sa in self._live.items():
                now_sa = current.get(serial)
                if now_sa is not None and _same_sa(sa, now_sa):
                    continue
                event = "rekey" if newest.get(_tunnel(sa), 0) > serial else "down"
                self._end(serial, sa, event, now)
            # The oldest serial per tunnel of the last round: an SA numbered after it
            # replaces it (a rekey); one with no older predecessor came up.
            oldest: dict[tuple[str, int | None, str], int] = {}
            for serial, sa in self._live.items():
                key = _tunnel(sa)
                oldest[key] = min(oldest.get(key, serial), serial)
            for serial, sa in current.items():
                old = self._live.get(serial)
                if old is not None and _same_sa(old, sa):
                    continue
                log.debug("IPsec SA new", extra={"serial": serial, "instance": sa.instance})
                if oldest.get(_tunnel(sa), serial) >= serial:
                    self._events[(sa.connection, "up")] += 1
                    self._last_change[sa.connection] = now
        for sa in current.values():
            self._events.setdefault((sa.connection, "up"), 0)
        self._live = current
        self._raw = {serial: self._raw[serial] for serial in current if serial in self._raw}
        self._finals = {k: v for k, v in self._finals.items() if k in current}
        self._first_round = False
        self._carry(snapshot.global_counters)

    def _monotonic(self, sa: IpsecSa) -> IpsecSa:
        """The SA with byte counts that never go down while it lives. pluto 4.x prints
        inBytes as a 32-bit number (it wraps at 4 GiB; outBytes does not), and a count the
        kernel did not give pluto this round reads as 0."""
        old = self._live.get(sa.serial)
        if old is None or not _same_sa(old, sa):
            self._raw[sa.serial] = (sa.in_bytes, sa.out_bytes)
            return sa
        raw_in, raw_out = self._raw.get(sa.serial, (old.in_bytes, old.out_bytes))
        in_bytes = old.in_bytes + _advance(raw_in, sa.in_bytes)
        out_bytes = old.out_bytes + _advance(raw_out, sa.out_bytes)
        self._raw[sa.serial] = (
            sa.in_bytes if sa.in_bytes else raw_in,
            sa.out_bytes if sa.out_bytes else raw_out,
        )
        return replace(sa, in_bytes=in_bytes, out_bytes=out_bytes)

    def _carry(self, counters: dict[str, int]) -> None:
        # pluto counts from zero again when it restarts; a total that drops below its last
        # value continues from there, so the exporter's _total never goes backwards.
        for key, value in counters.items():
            last = self._counter_last.get(key)
            if last is not None and value < last:
                self._counter_base[key] = self._counter_base.get(key, 0) + last
            self._counter_last[key] = value

    def record_final(self, serial: int, traffic: Traffic) -> None:
        """The kernel's final byte counts of an SA that pluto will report gone (from the
        XFRM delete notification): used instead of its last polled reading."""
        self._finals[serial] = traffic

    def _end(self, serial: int, sa: IpsecSa, event: str, now: float) -> None:
        log.debug(
            "IPsec SA ended",
            extra={
                "serial": serial,
                "conn": sa.connection,
                "instance": sa.instance,
                "event": event,
            },
        )
        self._events[(sa.connection, event)] += 1
        if event == "down":
            self._last_change[sa.connection] = now
        last = Traffic(sa.in_bytes, sa.out_bytes)
        final = self._finals.pop(serial, last)
        # Never below what was already shown for the live SA.
        final = Traffic(max(final.in_bytes, last.in_bytes), max(final.out_bytes, last.out_bytes))
        self._ended_conn[sa.connection] = self._ended_conn.get(sa.connection, Traffic()) + final
        key = (sa.connection, user_of(sa))
        if key in self._ended_user or len(self._ended_user) < self.max_users:
            self._ended_user[key] = self._ended_user.get(key, Traffic()) + final
        else:
            self._untracked_users += 1

    def readings(self) -> LedgerReadings:
        conn = dict(self._ended_conn)
        users = dict(self._ended_user)
        for sa in self._live.values():
            live = Traffic(sa.in_bytes, sa.out_bytes)
            conn[sa.connection] = conn.get(sa.connection, Traffic()) + live
            key = (sa.connection, user_of(sa))
            if key in users or len(users) < self.max_users:
                users[key] = users.get(key, Traffic()) + live
        return LedgerReadings(
            events=dict(self._events),
            connection_traffic=conn,
            user_traffic=users,
            last_change=dict(self._last_change),
            untracked_users=self._untracked_users,
            global_counters={
                key: self._counter_base.get(key, 0) + value
                for key, value in self._counter_last.items()
            },
        )
