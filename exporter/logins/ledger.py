"""Per-login counters that survive reconnects: the ledger of PPP sessions by login.

A ppp interface's counters vanish with its session. The ledger keeps, per login, the
counts of its ended sessions ("banked") plus its live sessions' current counts, so a
login's totals only grow while the exporter runs. It is pure: fed at every refresh with
what the kernel and the hooks said (`update`), it does no I/O and reads the time only
from the clock it is given, so every rule below is unit-tested
(tests/unit/test_login_ledger.py).

- A session is one ppp interface (name and interface index); its pppd pid (from the up
  record) tells sessions on a reused name apart in the ended records.
- Its login is the PPP user (the hook's PEERNAME), else the IKE user of the join once the
  session has waited `LOGIN_GRACE_SECONDS` for a hook record; with neither it is counted in
  `without_login` only.
- When a session ends its counts are banked: the larger of the ended record's final
  counts (pppd's BYTES_RCVD/BYTES_SENT, the interface's packets) and the last ones seen
  live, per counter, so nothing goes backwards. Each ended record counts once (by its
  file name). A record of a session never seen live (it started and ended between two
  refreshes) is banked whole. A session whose interface went without a record (pppd
  killed) is banked with its last seen counts after `grace` seconds, `how="vanished"`; a
  record that comes later still tops it up (and the page's entry becomes `how="hook"`).
- After an exporter restart counters start at zero. A session that was up before the
  start counts only what it carries beyond its counts at first sight (its baseline) and
  no login; a record of a session that ended before the start is not counted (the page
  still lists it); one that started before and ended after counts its logout and its
  connected time since the start, not its bytes (the baseline is unknown).
- Bounded: `max_users` logins (beyond it the longest-idle login without a session is
  forgotten, reason "limit"; when all have one, a new login is not tracked), a login
  without a session for `idle_expiry` is forgotten ("idle"), `history` ended sessions,
  and the ended sessions remembered to match late records (`MAX_TOMBSTONES`).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from exporter.kernel.gcpause import gc_paused
from exporter.kernel.model import L2tpIpsecSession, PppHookRecord, PppInterface
from exporter.logins.model import (
    EndedRecord,
    EndedSession,
    LiveSession,
    LoginsView,
    LoginTotals,
)
from exporter.logins.options import LoginOptions

#: Seconds a session waits for its up record before the IKE user is taken as its login.
LOGIN_GRACE_SECONDS = 5.0
#: Seconds a vanished interface waits for its ended record before it is banked as
#: vanished. pppd removes the interface before ip-down runs; in the emulated guest the
#: hook started 12.5 s later (docs/logins.md). A late record still tops the session up.
GRACE_SECONDS = 30.0
#: Ended sessions remembered (to ignore an interface that outlives its ip-down, and to top
#: up a vanished session from a late record), and for how long after last seen.
MAX_TOMBSTONES = 4096
TOMBSTONE_SECONDS = 600.0
#: Rates need readings at least this far apart.
RATE_MIN_INTERVAL = 1.0
#: A record "belongs" to a session only if it did not end before the session started
#: (hook times are whole seconds).
_CLOCK_SLACK = 1.0

#: (interface name, interface index): one ppp interface, one session.
SessionKey = tuple[str, int]


@dataclass(slots=True)
class Counts:
    receive_bytes: int = 0
    transmit_bytes: int = 0
    receive_packets: int = 0
    transmit_packets: int = 0

    @classmethod
    def of(cls, iface: PppInterface) -> Counts:
        s = iface.stats
        return cls(s.rx_bytes, s.tx_bytes, s.rx_packets, s.tx_packets)

    def maximum(self, other: Counts) -> Counts:
        return Counts(
            max(self.receive_bytes, other.receive_bytes),
            max(self.transmit_bytes, other.transmit_bytes),
            max(self.receive_packets, other.receive_packets),
            max(self.transmit_packets, other.transmit_packets),
        )

    def minus(self, other: Counts) -> Counts:
        """Growth since `other`, never negative."""
        return Counts(
            max(0, self.receive_bytes - other.receive_bytes),
            max(0, self.transmit_bytes - other.transmit_bytes),
            max(0, self.receive_packets - other.receive_packets),
            max(0, self.transmit_packets - other.transmit_packets),
        )

    def add(self, other: Counts) -> None:
        self.receive_bytes += other.receive_bytes
        self.transmit_bytes += other.transmit_bytes
        self.receive_packets += other.receive_packets
        self.transmit_packets += other.transmit_packets

    def copy(self) -> Counts:
        return Counts(
            self.receive_bytes, self.transmit_bytes, self.receive_packets, self.transmit_packets
        )


def final_counts(record: EndedRecord, fallback: Counts) -> Counts:
    """The record's counts, a count it lacks taken from `fallback`."""

    def pick(value: int | None, other: int) -> int:
        return other if value is None else value

    return Counts(
        pick(record.receive_bytes, fallback.receive_bytes),
        pick(record.transmit_bytes, fallback.transmit_bytes),
        pick(record.receive_packets, fallback.receive_packets),
        pick(record.transmit_packets, fallback.transmit_packets),
    )


@dataclass(slots=True)
class _Reading:
    at: float
    receive_bytes: int
    transmit_bytes: int


@dataclass(slots=True)
class _Session:
    key: SessionKey
    started_at: float | None
    first_seen: float
    preexisting: bool
    baseline: Counts
    last: Counts
    last_seen: float
    login: str = ""
    pppd_pid: int | None = None
    vanished_at: float | None = None
    conn: str = ""
    ike_identity: str = ""
    public_address: str = ""
    inner_address: str = ""
    reading: _Reading | None = None
    anchor: _Reading | None = None

    @property
    def contribution(self) -> Counts:
        return self.last.minus(self.baseline)

    def counted_since(self, exporter_start: float) -> float:
        start = self.started_at if self.started_at is not None else self.first_seen
        return max(start, exporter_start)

    def rates(self) -> tuple[float | None, float | None]:
        a, b = self.anchor, self.reading
        if a is None or b is None or b.at - a.at < RATE_MIN_INTERVAL:
            return None, None
        span = b.at - a.at
        return (
            max(0, b.receive_bytes - a.receive_bytes) / span,
            max(0, b.transmit_bytes - a.transmit_bytes) / span,
        )


@dataclass(slots=True)
class _Tombstone:
    """An ended session: what was banked for it, to top it up from a late record."""

    login: str
    pppd_pid: int | None
    started_at: float | None
    first_seen: float
    ended_at: float
    baseline: Counts
    banked: Counts
    seen: float
    #: Its entry in the page's history (replaced when a late record tops it up).
    entry: EndedSession | None = None


@dataclass(slots=True)
class _Login:
    login: str
    created: float
    last_change: float
    banked: Counts = field(default_factory=Counts)
    banked_seconds: float = 0.0
    logins: int = 0
    logouts: int = 0
    last_login: float | None = None
    last_logout: float | None = None
    #: What the view last showed: totals never go below it.
    shown: Counts = field(default_factory=Counts)
    shown_seconds: float = 0.0


def _later(known: float | None, value: float) -> float:
    return value if known is None else max(known, value)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _record_matches(
    record: EndedRecord,
    key: SessionKey,
    pppd_pid: int | None,
    started_at: float | None,
    first_seen: float,
) -> bool:
    """Whether `record` can be the end of that session: same interface, the same index
    and pppd when both sides know them, and not ended before the session began (without
    a start time: well before it was first seen, as an older session's record would)."""
    interface, ifindex = key
    if record.interface != interface:
        return False
    if record.ifindex is not None and record.ifindex != ifindex:
        return False
    if record.pppd_pid is not None and pppd_pid is not None and record.pppd_pid != pppd_pid:
        return False
    if started_at is None:
        return record.ended_at >= first_seen - GRACE_SECONDS
    return record.ended_at >= started_at - _CLOCK_SLACK


class LoginLedger:
    """See the module docstring. `started_at` is when the exporter started."""

    def __init__(
        self,
        options: LoginOptions,
        clock: Callable[[], float],
        started_at: float,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self.options = options
        self.clock = clock
        self.started_at = started_at
        self.grace = grace
        self._live: dict[SessionKey, _Session] = {}
        self._tombs: OrderedDict[SessionKey, _Tombstone] = OrderedDict()
        self._logins: dict[str, _Login] = {}
        self._counted: set[str] = set()
        self._history: list[EndedSession] = []  # oldest first
        self._forgotten = {"idle": 0, "limit": 0}
        self._updates = 0
        #: Views in which a login's traffic would have gone down and was held (tests: 0).
        self.held_back = 0
        self._view = LoginsView(at=started_at, live=(), ended=(), totals=())

    def reconfigure(self, options: LoginOptions) -> None:
        """A reload: new bounds and required logins apply from the next update (a smaller
        history is cut now; logins beyond a smaller `max_users` go as new ones come)."""
        self.options = options
        if len(self._history) > options.history:
            del self._history[: len(self._history) - options.history]

    # -- feeding -------------------------------------------------------------------------

    @gc_paused
    def update(
        self,
        sessions: Iterable[L2tpIpsecSession],
        interfaces: Iterable[PppInterface],
        hooks: Mapping[str, PppHookRecord],
        ended: Sequence[EndedRecord] | None,
        now: float | None = None,
    ) -> LoginsView:
        """One refresh. `ended` None: the ended records could not be read this time."""
        now = self.clock() if now is None else now
        joined = {s.interface: s for s in sessions}
        seen: set[SessionKey] = set()
        for iface in interfaces:
            hook = hooks.get(iface.name)
            if hook is not None and hook.ifindex is not None and hook.ifindex != iface.index:
                hook = None  # left over from an earlier session on this name
            key = (iface.name, iface.index)
            session = self._live.get(key)
            if session is None:
                session = self._begin(key, iface, hook, joined.get(iface.name), now)
                if session is None:
                    continue
            seen.add(key)
            self._observe(session, iface, hook, joined.get(iface.name), now)
        for key, session in self._live.items():
            if key not in seen and session.vanished_at is None:
                session.vanished_at = now
        if ended is not None:
            self._take_records(ended, now)
        for session in list(self._live.values()):
            vanished_at = session.vanished_at
            if vanished_at is not None and now - vanished_at >= self.grace:
                self._end(session, None, now)
        self._expire(now)
        self._updates += 1
        self._view = self._make_view(now)
        return self._view

    def view(self) -> LoginsView:
        """What the last `update` made of it."""
        return self._view

    # -- live sessions -------------------------------------------------------------------

    def _begin(
        self,
        key: SessionKey,
        iface: PppInterface,
        hook: PppHookRecord | None,
        joined: L2tpIpsecSession | None,
        now: float,
    ) -> _Session | None:
        baseline = Counts()
        tomb = self._tombs.get(key)
        if tomb is not None:
            # The interface of an ended session is still there: ip-down runs before pppd
            # takes the interface down. Unless a newer ip-up (IPCP renegotiated on the same
            # interface) recorded a later start, it is the same session: ignore it.
            renewed = (
                hook is not None
                and hook.up_since is not None
                and tomb.started_at is not None
                and hook.up_since > tomb.started_at
            )
            if not renewed:
                tomb.seen = now
                return None
            del self._tombs[key]
            baseline = tomb.baseline.copy()
            baseline.add(tomb.banked)
        started = hook.up_since if hook is not None else None
        if started is None:
            started = iface.up_since
        if started is None and joined is not None:
            started = joined.started_at
        if tomb is not None:
            preexisting = False
        elif started is not None:
            # The hook's times are whole seconds: within a second of the start is ours.
            preexisting = started < self.started_at - _CLOCK_SLACK
        else:
            # No start time at all: up before the first refresh counts as up before us.
            preexisting = self._updates == 0
        if preexisting:
            baseline = Counts.of(iface)
        session = _Session(
            key=key,
            started_at=started,
            first_seen=now,
            preexisting=preexisting,
            baseline=baseline,
            last=baseline.copy(),
            last_seen=now,
        )
        self._live[key] = session
        return session

    def _observe(
        self,
        session: _Session,
        iface: PppInterface,
        hook: PppHookRecord | None,
        joined: L2tpIpsecSession | None,
        now: float,
    ) -> None:
        counts = Counts.of(iface)
        session.last = session.last.maximum(counts)
        session.last_seen = now
        session.vanished_at = None
        if hook is not None and hook.pppd_pid is not None:
            session.pppd_pid = hook.pppd_pid
        if joined is not None:
            session.conn = joined.conn or session.conn
            session.ike_identity = joined.ike_user or session.ike_identity
            session.public_address = joined.public_address or session.public_address
            session.inner_address = joined.inner_address or session.inner_address
        elif iface.peer_address:
            session.inner_address = iface.peer_address
        reading = _Reading(now, counts.receive_bytes, counts.transmit_bytes)
        if session.reading is None or now - session.reading.at >= RATE_MIN_INTERVAL:
            session.anchor = session.reading
            session.reading = reading
        elif session.anchor is not None:
            session.reading = reading  # still ≥ 1 s after the anchor
        if not session.login:
            login = hook.peer_name if hook is not None else ""
            if not login and joined is not None:
                login = joined.ppp_user
                if not login and now - session.first_seen >= LOGIN_GRACE_SECONDS:
                    login = joined.ike_user
            if login:
                self._arrive(session, login, now)

    def _arrive(self, session: _Session, login: str, now: float) -> None:
        """A session's login became known: the login is tracked and, unless the session
        was up before the exporter, counted as a login."""
        session.login = login
        entry = self._track(login, now)
        if entry is None:
            return
        started = session.started_at if session.started_at is not None else session.first_seen
        entry.last_login = _later(entry.last_login, started)
        entry.last_change = now
        if not session.preexisting:
            entry.logins += 1

    # -- ended sessions ------------------------------------------------------------------

    def _take_records(self, records: Sequence[EndedRecord], now: float) -> None:
        present = {r.name for r in records}
        # Names no longer in the directory (pruned) cannot come back: forget them.
        self._counted &= present
        for record in sorted(records, key=lambda r: (r.ended_at, r.name)):
            if record.name in self._counted:
                continue
            self._counted.add(record.name)
            session = self._match_live(record)
            if session is not None:
                self._end(session, record, now)
                continue
            tomb = self._match_tomb(record)
            if tomb is not None:
                self._top_up(tomb, record)
                continue
            self._bank_unseen(record, now)

    def _match_live(self, record: EndedRecord) -> _Session | None:
        if record.ifindex is not None:
            candidates: Iterable[_Session] = filter(
                None, [self._live.get((record.interface, record.ifindex))]
            )
        else:
            candidates = self._live.values()
        for session in candidates:
            if _record_matches(
                record, session.key, session.pppd_pid, session.started_at, session.first_seen
            ):
                return session
        return None

    def _match_tomb(self, record: EndedRecord) -> _Tombstone | None:
        for key, tomb in reversed(self._tombs.items()):
            if _record_matches(record, key, tomb.pppd_pid, tomb.started_at, tomb.first_seen):
                return tomb
        return None

    def _end(self, session: _Session, record: EndedRecord | None, now: float) -> None:
        """Bank a live session: from its ended record, else as vanished."""
        del self._live[session.key]
        final = session.last
        end = session.last_seen
        if record is not None:
            final = final_counts(record, session.last).maximum(session.last)
            end = record.ended_at
            if not session.login and record.login:
                self._arrive(session, record.login, now)
        banked = final.minus(session.baseline)
        counted_from = session.counted_since(self.started_at)
        seconds = max(0.0, end - counted_from)
        if (
            record is not None
            and record.connect_seconds is not None
            and not session.preexisting
            and session.started_at is not None
        ):
            seconds = record.connect_seconds
        entry = self._logins.get(session.login) if session.login else None
        if entry is not None:
            entry.banked.add(banked)
            entry.banked_seconds += seconds
            entry.logouts += 1
            entry.last_logout = _later(entry.last_logout, end)
            entry.last_change = max(entry.last_change, end)
        duration = None
        if session.started_at is not None:
            duration = max(0.0, end - session.started_at)
        if record is not None and record.connect_seconds is not None:
            duration = record.connect_seconds
        ended = EndedSession(
            login=session.login,
            interface=session.key[0],
            public_address=session.public_address
            or (record.ipparam if record and _is_address(record.ipparam) else ""),
            inner_address=session.inner_address or (record.inner_address if record else ""),
            started_at=session.started_at,
            ended_at=end,
            duration_seconds=duration,
            receive_bytes=final.receive_bytes,
            transmit_bytes=final.transmit_bytes,
            how="hook" if record is not None else "vanished",
        )
        self._remember(ended)
        self._tombs[session.key] = _Tombstone(
            login=session.login,
            pppd_pid=session.pppd_pid,
            started_at=session.started_at,
            first_seen=session.first_seen,
            ended_at=end,
            baseline=session.baseline.copy(),
            banked=banked,
            seen=now,
            entry=ended,
        )
        self._tombs.move_to_end(session.key)
        while len(self._tombs) > MAX_TOMBSTONES:
            self._tombs.popitem(last=False)

    def _top_up(self, tomb: _Tombstone, record: EndedRecord) -> None:
        """A record of a session already banked (as vanished: its record came late): bank
        what the record has beyond that, and connected time up to its end."""
        final = final_counts(record, tomb.baseline)
        extra = final.minus(tomb.baseline).minus(tomb.banked)
        tomb.banked.add(extra)
        later = max(0.0, record.ended_at - tomb.ended_at)
        entry = self._logins.get(tomb.login) if tomb.login else None
        if entry is not None:
            entry.banked.add(extra)
            entry.banked_seconds += later
            if entry.last_logout is not None and later:
                entry.last_logout = max(entry.last_logout, record.ended_at)
        tomb.ended_at = max(tomb.ended_at, record.ended_at)
        old = tomb.entry
        if old is not None and old in self._history:
            self._history.remove(old)
            tomb.entry = replace(
                old,
                ended_at=tomb.ended_at,
                duration_seconds=record.connect_seconds
                if record.connect_seconds is not None
                else old.duration_seconds,
                receive_bytes=max(old.receive_bytes, final.receive_bytes),
                transmit_bytes=max(old.transmit_bytes, final.transmit_bytes),
                how="hook",
            )
            self._remember(tomb.entry)

    def _bank_unseen(self, record: EndedRecord, now: float) -> None:
        """A session never seen live: it started and ended between two refreshes (or
        before the exporter started)."""
        started = record.started_at
        if started is None and record.connect_seconds is not None:
            started = record.ended_at - record.connect_seconds
        self._remember(
            EndedSession(
                login=record.login,
                interface=record.interface,
                public_address=record.ipparam if _is_address(record.ipparam) else "",
                inner_address=record.inner_address,
                started_at=started,
                ended_at=record.ended_at,
                duration_seconds=record.connect_seconds
                if record.connect_seconds is not None
                else (record.ended_at - started if started is not None else None),
                receive_bytes=record.receive_bytes or 0,
                transmit_bytes=record.transmit_bytes or 0,
                how="hook",
            )
        )
        if record.ended_at < self.started_at - _CLOCK_SLACK or not record.login:
            return  # before our time: the page lists it, the counters do not
        preexisting = started is not None and started < self.started_at - _CLOCK_SLACK
        entry = self._track(record.login, now)
        if entry is None:
            return
        if not preexisting:
            entry.logins += 1
            entry.banked.add(final_counts(record, Counts()))
            seconds = record.connect_seconds
            if seconds is None:
                seconds = record.ended_at - started if started is not None else 0.0
            entry.banked_seconds += max(0.0, seconds)
        else:
            entry.banked_seconds += max(0.0, record.ended_at - self.started_at)
        entry.logouts += 1
        if started is not None:
            entry.last_login = (
                started if entry.last_login is None else max(entry.last_login, started)
            )
        end = record.ended_at
        entry.last_logout = _later(entry.last_logout, end)
        entry.last_change = max(entry.last_change, end)

    def _remember(self, ended: EndedSession) -> None:
        limit = self.options.history
        if limit <= 0:
            return
        bisect.insort(self._history, ended, key=lambda e: e.ended_at)
        if len(self._history) > limit:
            del self._history[: len(self._history) - limit]

    # -- bounds --------------------------------------------------------------------------

    def _connected_logins(self) -> set[str]:
        return {s.login for s in self._live.values() if s.login}

    def _track(self, login: str, now: float) -> _Login | None:
        entry = self._logins.get(login)
        if entry is not None:
            return entry
        if len(self._logins) >= self.options.max_users:
            connected = self._connected_logins()
            idle = [e for e in self._logins.values() if e.login not in connected]
            if not idle:
                return None  # all tracked logins are connected: this one is not tracked
            oldest = min(idle, key=lambda e: (e.last_change, e.login))
            del self._logins[oldest.login]
            self._forgotten["limit"] += 1
        entry = _Login(login=login, created=now, last_change=now)
        self._logins[login] = entry
        return entry

    def _expire(self, now: float) -> None:
        connected = self._connected_logins()
        for entry in list(self._logins.values()):
            if entry.login in connected:
                entry.last_change = max(entry.last_change, now)
            elif now - entry.last_change >= self.options.idle_expiry:
                del self._logins[entry.login]
                self._forgotten["idle"] += 1
        for key, tomb in list(self._tombs.items()):
            if now - tomb.seen >= TOMBSTONE_SECONDS:
                del self._tombs[key]

    # -- the view ------------------------------------------------------------------------

    def _make_view(self, now: float) -> LoginsView:
        by_login: dict[str, list[_Session]] = {}
        without_login = 0
        live: list[LiveSession] = []
        for session in self._live.values():
            if session.login:
                by_login.setdefault(session.login, []).append(session)
            if session.vanished_at is not None:
                continue  # gone, waiting for its record: counted, not listed
            if not session.login:
                without_login += 1
            rx_rate, tx_rate = session.rates()
            live.append(
                LiveSession(
                    login=session.login,
                    interface=session.key[0],
                    conn=session.conn,
                    ike_identity=session.ike_identity,
                    public_address=session.public_address,
                    inner_address=session.inner_address,
                    connected_since=session.started_at,
                    receive_bytes=session.last.receive_bytes,
                    transmit_bytes=session.last.transmit_bytes,
                    receive_rate=rx_rate,
                    transmit_rate=tx_rate,
                )
            )
        totals = []
        for login in sorted(self._logins):
            entry = self._logins[login]
            sessions = by_login.get(login, [])
            counts = entry.banked.copy()
            seconds = entry.banked_seconds
            connected = 0
            for session in sessions:
                counts.add(session.contribution)
                until = now if session.vanished_at is None else session.last_seen
                seconds += max(0.0, until - session.counted_since(self.started_at))
                connected += session.vanished_at is None
            if entry.shown.minus(counts) != Counts():
                self.held_back += 1  # a bug's trace: the rules above never need this
            entry.shown = entry.shown.maximum(counts)
            entry.shown_seconds = max(entry.shown_seconds, seconds)
            shown = entry.shown
            totals.append(
                LoginTotals(
                    login=login,
                    sessions=connected,
                    logins=entry.logins,
                    logouts=entry.logouts,
                    connected_seconds=entry.shown_seconds,
                    receive_bytes=shown.receive_bytes,
                    transmit_bytes=shown.transmit_bytes,
                    receive_packets=shown.receive_packets,
                    transmit_packets=shown.transmit_packets,
                    last_login=entry.last_login,
                    last_logout=entry.last_logout,
                    created=entry.created,
                )
            )
        live.sort(key=lambda s: (s.login, s.interface))
        return LoginsView(
            at=now,
            live=tuple(live),
            ended=tuple(reversed(self._history)),
            totals=tuple(totals),
            required=self._required({s.login for s in live if s.login}),
            without_login=without_login,
            forgotten=tuple(sorted(self._forgotten.items())),
        )

    def _required(self, connected: set[str]) -> tuple[tuple[str, bool], ...]:
        patterns = self.options.required
        if not patterns:
            return ()
        up = {p: p in connected for p in patterns if not any(c in p for c in "*?[")}
        for login in self._logins:
            if login not in up and self.options.is_required(login):
                up[login] = login in connected
        return tuple(sorted(up.items()))
