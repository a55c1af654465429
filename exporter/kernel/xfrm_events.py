"""The kernel's XFRM SA notifications, as an event source.

The kernel announces every change of its SA table on `NETLINK_XFRM` multicast groups:

- `XFRMNLGRP_SA`: `XFRM_MSG_NEWSA` (an SA added), `XFRM_MSG_UPDSA` (an SA updated — how
  pluto and charon install an inbound SA over the larval state `XFRM_MSG_ALLOCSPI` made, so
  it is often an SA's first notification), `XFRM_MSG_DELSA` (an SA deleted: an
  `xfrm_usersa_id` header and an `XFRMA_SA` attribute with the whole `xfrm_usersa_info`,
  its lifetime counters — the final byte and packet counts — included) and
  `XFRM_MSG_FLUSHSA` (every SA of a protocol deleted at once, no counts);
- `XFRMNLGRP_EXPIRE`: `XFRM_MSG_EXPIRE` (a soft or hard lifetime limit reached; after a
  hard one the kernel deletes the SA *without* a DELSA) and `XFRM_MSG_POLEXPIRE` (policies;
  ignored).

`decode_events` turns the bytes of one `recv()` into typed, frozen events; the live source
and the tests on recorded bytes run the same function. Key material (`XFRMA_ALG_*`) is
never decoded: the attribute table is `exporter.kernel.xfrm`'s, which maps it to `none`.

`XfrmEventSource` subscribes (in a named network namespace, if asked, like the other kernel
sources), hands each event to a handler, and reconnects with backoff when the socket fails.
Whenever events may have been missed — at the first subscription, after a reconnect, and
when the kernel dropped notifications because the socket's buffer was full (`ENOBUFS`) — it
hands over `ResyncNeeded`: the consumer then dumps the SA table (`dump_xfrm`) and resyncs
(`exporter.kernel.sa_lifecycle.SaLedger.resync`). After an overflow the source first reads
what is still queued (those notifications are good) and only then asks for the resync.

    python3 -m exporter.kernel.xfrm_events [--netns NAME] [--record FILE] [--seconds N]
        [--rcvbuf BYTES]

prints the events as JSON lines (with --record, every datagram as received goes to FILE and
(offset, length, received_at) of each to FILE.index.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NETLINK_XFRM, nla, nlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import Marshal

from exporter.kernel.model import XfrmState
from exporter.kernel.netlink import NLMSG_DONE, NLMSG_ERROR, netns_error, socket_args
from exporter.kernel.xfrm import (
    PROTOCOLS,
    XFRM_MSG_NEWSA,
    address,
    dump_xfrm,
    state_of,
    xfrm_usersa_info,
)

log = logging.getLogger(__name__)

XFRM_MSG_DELSA = 0x11
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C

#: enum xfrm_nlgroups (xfrm.h); a socket joins group N with bit N-1 of its bind mask.
XFRMNLGRP_EXPIRE = 2
XFRMNLGRP_SA = 3
DEFAULT_GROUPS = (XFRMNLGRP_SA, XFRMNLGRP_EXPIRE)
#: IPSEC_PROTO_ANY: a flush of every IPsec protocol.
_PROTO_ANY = 255


class xfrm_usersa_id(nlmsg):  # type: ignore[misc]
    """struct xfrm_usersa_id (24 bytes), the header of an XFRM_MSG_DELSA notification,
    followed by XFRMA_SA (the deleted SA's xfrm_usersa_info) and its other attributes.

    A class of its own, not a subclass of `xfrm_usersa_info`: pyroute2 compiles an
    attribute table once per class hierarchy, and this one differs in XFRMA_SA."""

    prefix = "XFRMA_"
    fields = (
        ("daddr", "16s"),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("__pad", "x"),
    )
    nla_map = tuple(
        (name, "usersa_info" if name == "XFRMA_SA" else kind)
        for name, kind in xfrm_usersa_info.nla_map
    )
    encap_tmpl = xfrm_usersa_info.encap_tmpl
    replay_state = xfrm_usersa_info.replay_state
    user_tmpl = xfrm_usersa_info.user_tmpl

    class usersa_info(nla):  # type: ignore[misc]
        fields = xfrm_usersa_info.fields


class xfrm_user_expire(xfrm_usersa_info):
    """struct xfrm_user_expire (232 bytes): the SA as it was, and whether the limit was
    the hard one."""

    fields = (*xfrm_usersa_info.fields, ("hard", "B"), ("__hard_pad", "7x"))


class xfrm_usersa_flush(nlmsg):  # type: ignore[misc]
    """struct xfrm_usersa_flush: the protocol flushed (IPSEC_PROTO_ANY: all)."""

    fields = (("proto", "B"),)


class MarshalXfrmEvents(Marshal):  # type: ignore[misc]
    msg_map = {
        XFRM_MSG_NEWSA: xfrm_usersa_info,
        XFRM_MSG_UPDSA: xfrm_usersa_info,
        XFRM_MSG_DELSA: xfrm_usersa_id,
        XFRM_MSG_EXPIRE: xfrm_user_expire,
        XFRM_MSG_FLUSHSA: xfrm_usersa_flush,
    }


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SaAdded:
    """An SA installed (XFRM_MSG_NEWSA) or updated (XFRM_MSG_UPDSA; `updated`): the
    kernel's view of it at that moment, counters included."""

    state: XfrmState
    #: When the notification was received (epoch seconds).
    at: float
    updated: bool = False


@dataclass(frozen=True)
class SaDeleted:
    """An SA deleted (XFRM_MSG_DELSA); `state` carries its final lifetime counts. When a
    notification lacks XFRMA_SA (never seen), `final` is False and the counts are 0."""

    state: XfrmState
    at: float
    final: bool = True


@dataclass(frozen=True)
class SaExpired:
    """A lifetime limit reached (XFRM_MSG_EXPIRE). After a `hard` one the kernel deletes
    the SA with no XFRM_MSG_DELSA, so this is its end, with its final counts."""

    state: XfrmState
    hard: bool
    at: float


@dataclass(frozen=True)
class SasFlushed:
    """Every SA of `proto` (None: of every IPsec protocol) deleted (XFRM_MSG_FLUSHSA),
    with no counts."""

    proto: str | None
    at: float


@dataclass(frozen=True)
class ResyncNeeded:
    """Notifications may have been missed before this point: dump the table and resync.
    `reason`: "start" (first subscription), "reconnect" (the socket failed and was opened
    again) or "overflow" (the kernel dropped notifications: ENOBUFS)."""

    reason: str
    at: float


XfrmEvent = SaAdded | SaDeleted | SaExpired | SasFlushed | ResyncNeeded


@dataclass(frozen=True)
class Decoded:
    """What one datagram held: its events, and how many messages were not understood
    (cut short, malformed) or not of interest (policy expiry, errors, other types)."""

    events: tuple[XfrmEvent, ...]
    undecodable: int = 0
    ignored: int = 0


def _delsa_state(msg: Any) -> tuple[XfrmState, bool]:
    info = msg.get_attr("XFRMA_SA")
    if info is not None and not isinstance(info, bytes | bytearray | str):
        return state_of(info, msg), True
    family = msg["family"]
    proto = msg["proto"]
    state = XfrmState(
        src="",
        dst=address(msg["daddr"], family),
        spi=msg["spi"],
        proto=PROTOCOLS.get(proto, str(proto)),
        mode="",
        reqid=0,
        bytes=0,
        packets=0,
        added_at=0.0,
        replay_window_errors=0,
        replay_errors=0,
        integrity_errors=0,
    )
    return state, False


def decode_message(msg: Any, at: float) -> XfrmEvent | None:
    """One pyroute2 message from `MarshalXfrmEvents` as an event; None when it is not an
    SA notification. Raises (ValueError, KeyError, struct.error, ...) on a malformed
    one."""
    if msg["header"].get("error") is not None:
        raise ValueError(f"undecodable message: {msg['header']['error']}")
    kind = msg["header"]["type"]
    if kind in (XFRM_MSG_NEWSA, XFRM_MSG_UPDSA):
        return SaAdded(state=state_of(msg), at=at, updated=kind == XFRM_MSG_UPDSA)
    if kind == XFRM_MSG_DELSA:
        state, final = _delsa_state(msg)
        return SaDeleted(state=state, at=at, final=final)
    if kind == XFRM_MSG_EXPIRE:
        return SaExpired(state=state_of(msg), hard=bool(msg["hard"]), at=at)
    if kind == XFRM_MSG_FLUSHSA:
        proto = msg["proto"]
        name = None if proto in (0, _PROTO_ANY) else PROTOCOLS.get(proto, str(proto))
        return SasFlushed(proto=name, at=at)
    return None


def decode_events(data: bytes, at: float) -> Decoded:
    """The events in the bytes of one `recv()` on the subscribed socket (or one recorded
    datagram), received at `at` (epoch seconds). Never raises: a message that cannot be
    decoded is counted in `undecodable`."""
    events: list[XfrmEvent] = []
    undecodable = ignored = 0
    try:
        msgs = list(MarshalXfrmEvents().parse(data))
    except Exception:  # pyroute2 raises various things on garbage
        return Decoded((), undecodable=1)
    if not msgs and data:  # no whole message in it
        return Decoded((), undecodable=1)
    for msg in msgs:
        if msg["header"].get("type") in (NLMSG_ERROR, NLMSG_DONE):
            ignored += 1
            continue
        try:
            event = decode_message(msg, at)
        except Exception:  # whatever a malformed message makes pyroute2 or us raise
            undecodable += 1
            continue
        if event is None:
            ignored += 1
        else:
            events.append(event)
    return Decoded(tuple(events), undecodable=undecodable, ignored=ignored)


# --- the source -----------------------------------------------------------------------


class _Socket(Protocol):
    def fileno(self) -> int: ...
    def recv(self, bufsize: int, flags: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


def group_mask(groups: tuple[int, ...]) -> int:
    mask = 0
    for group in groups:
        mask |= 1 << (group - 1)
    return mask


def open_socket(netns: str | None, groups: tuple[int, ...], rcvbuf: int) -> socket.socket:
    """A non-blocking NETLINK_XFRM socket joined to `groups`, in `netns` (None: ours).
    Blocking (it forks to enter a namespace): run it in a thread."""
    kw = socket_args(netns)
    try:
        if netns:
            sock: socket.socket = pyroute2_netns.create_socket(
                kw["netns"], socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM, flags=kw["flags"]
            )
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    except OSError as err:
        raise netns_error(netns, err) from None
    try:
        # SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN; without it, SO_RCVBUF.
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.bind((0, group_mask(groups)))
        except PermissionError as err:
            raise PermissionError(
                err.errno, "joining the XFRM multicast groups needs CAP_NET_ADMIN"
            ) from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class SourceStats:
    """What the source has done since it was made."""

    subscribed: bool = False
    #: Successful subscriptions (the first one included).
    subscriptions: int = 0
    #: Socket failures that closed the subscription (each followed by a reconnect).
    failures: int = 0
    #: ENOBUFS reports: the kernel dropped notifications at least once each time.
    overflows: int = 0
    datagrams: int = 0
    events: int = 0
    undecodable: int = 0
    ignored: int = 0
    handler_errors: int = 0
    last_error: str | None = None
    #: When the current subscription was made (epoch seconds), None when not subscribed.
    subscribed_at: float | None = None
    #: The receive buffer the kernel granted (SO_RCVBUF), None when unknown.
    rcvbuf: int | None = None


@dataclass
class XfrmEventSource:
    """Subscribes to the XFRM SA notifications and hands each event to `handler`, in
    order, from the event loop (see the module docstring for `ResyncNeeded`).

    `recorder`, when given, gets every datagram as received, before decoding."""

    handler: Callable[[XfrmEvent], None]
    netns: str | None = None
    groups: tuple[int, ...] = DEFAULT_GROUPS
    #: The socket's receive buffer; a burst larger than it loses notifications.
    rcvbuf: int = 4 << 20
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    recorder: Callable[[bytes, float], None] | None = None
    clock: Callable[[], float] = time.time
    #: How the socket is opened (tests substitute a fake); run in a thread.
    opener: Callable[[str | None, tuple[int, ...], int], _Socket] = open_socket
    stats: SourceStats = field(default_factory=SourceStats)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _first: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> bool:
        """Start subscribing; returns once the first attempt succeeded (True) or failed
        (False; the source keeps retrying in the background)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._task = asyncio.create_task(self._run(), name="xfrm-events")
        assert self._first is not None
        await asyncio.shield(self._first)
        return self.stats.subscribed

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _first_done(self) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    async def _run(self) -> None:
        delay = self.backoff_initial
        reason = "start"
        try:
            while True:
                try:
                    sock = await asyncio.to_thread(
                        self.opener, self.netns, self.groups, self.rcvbuf
                    )
                except OSError as err:
                    self._failed(err, opening=True)
                    self._first_done()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    reason = "reconnect"
                    continue
                try:
                    self.stats.subscribed = True
                    self.stats.subscriptions += 1
                    self.stats.subscribed_at = self.clock()
                    getsockopt = getattr(sock, "getsockopt", None)
                    if getsockopt is not None:
                        self.stats.rcvbuf = int(getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
                    delay = self.backoff_initial
                    self._deliver(ResyncNeeded(reason, self.clock()))
                    self._first_done()
                    await self._read(sock)
                except OSError as err:
                    self._failed(err, opening=False)
                finally:
                    self.stats.subscribed = False
                    self.stats.subscribed_at = None
                    sock.close()
                reason = "reconnect"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._first_done()

    def _failed(self, err: OSError, opening: bool) -> None:
        self.stats.last_error = f"{type(err).__name__}: {err}"
        if not opening:
            self.stats.failures += 1
        log.warning(
            "XFRM notifications: %s %s; retrying",
            "cannot subscribe:" if opening else "socket failed:",
            err,
        )

    async def _read(self, sock: _Socket) -> None:
        """Deliver events until the socket fails (raises that OSError)."""
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                self._drain(sock)
            except OSError as err:
                if not failed.done():
                    failed.set_exception(err)

        fd = sock.fileno()
        loop.add_reader(fd, readable)
        try:
            await failed
        finally:
            loop.remove_reader(fd)

    def _drain(self, sock: _Socket) -> None:
        """Read every queued datagram. An overflow is reported once the queue is empty:
        what was queued is good, what the kernel dropped is not known."""
        overflow = False
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    self.stats.overflows += 1
                    overflow = True
                    continue
                raise
            if not data:  # a closed fake socket
                raise ConnectionResetError(errno.ECONNRESET, "socket closed")
            self._datagram(data)
        if overflow:
            log.warning("XFRM notifications lost (ENOBUFS): resyncing from a dump")
            self._deliver(ResyncNeeded("overflow", self.clock()))

    def _datagram(self, data: bytes) -> None:
        at = self.clock()
        self.stats.datagrams += 1
        if self.recorder is not None:
            self.recorder(data, at)
        decoded = decode_events(data, at)
        self.stats.undecodable += decoded.undecodable
        self.stats.ignored += decoded.ignored
        for event in decoded.events:
            self._deliver(event)

    def _deliver(self, event: XfrmEvent) -> None:
        self.stats.events += 1
        try:
            self.handler(event)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("XFRM event handler failed on %r", event)


# --- feeding a ledger -------------------------------------------------------------------


class Sink(Protocol):
    """What `ResyncingFeed` feeds (`exporter.kernel.sa_lifecycle.SaLedger` is one)."""

    def apply(self, event: XfrmEvent) -> None: ...
    def resync(self, states: Iterable[XfrmState], at: float) -> None: ...


@dataclass
class ResyncingFeed:
    """Hands each event to `sink`; on `ResyncNeeded` dumps the SA table (`dump`, by
    default `dump_xfrm` in `netns`) and resyncs the sink. Events that arrive while the
    dump is in flight are held back and applied after the resync, so that none of them is
    undone by a dump taken before it was applied. A failed dump is retried with the
    source's next event or after `retry` seconds."""

    sink: Sink
    netns: str | None = None
    timeout: float = 5.0
    retry: float = 5.0
    dump: Callable[[], Awaitable[list[XfrmState]]] | None = None
    clock: Callable[[], float] = time.time
    resyncs: int = 0
    dump_errors: int = 0
    last_dump_error: str | None = None
    _held: list[XfrmEvent] | None = field(default=None, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def __call__(self, event: XfrmEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        self.sink.apply(event)
        if isinstance(event, ResyncNeeded):
            self._held = []
            self._task = asyncio.get_running_loop().create_task(self._resync())

    async def _dump(self) -> list[XfrmState]:
        if self.dump is not None:
            return await self.dump()
        return list((await dump_xfrm(self.timeout, self.netns)).states)

    async def _resync(self) -> None:
        while True:
            at = self.clock()
            try:
                states = await self._dump()
            except (OSError, TimeoutError, NetlinkError) as err:
                self.dump_errors += 1
                self.last_dump_error = f"{type(err).__name__}: {err}"
                log.warning("XFRM dump for a resync failed: %s; retrying", err)
                await asyncio.sleep(self.retry)
                continue
            break
        held, self._held = self._held or [], None
        try:
            self.sink.resync(states, at)
            self.resyncs += 1
        except Exception:
            log.exception("resync from an XFRM dump failed")
        for event in held:
            self(event)

    async def idle(self) -> None:
        """Wait until no resync is in flight (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


# --- command line ---------------------------------------------------------------------


def event_json(event: XfrmEvent) -> dict[str, Any]:
    """An event as plain JSON data, with its type's name under "event"."""
    return {"event": type(event).__name__, **asdict(event)}


async def _main(args: argparse.Namespace) -> int:
    out: list[tuple[int, int, float]] = []
    blob = bytearray()

    def record(data: bytes, at: float) -> None:
        out.append((len(blob), len(data), at))
        blob.extend(data)

    def show(event: XfrmEvent) -> None:
        print(json.dumps(event_json(event)), flush=True)

    source = XfrmEventSource(show, netns=args.netns, recorder=record if args.record else None)
    ok = await source.start()
    print(json.dumps({"subscribed": ok, "error": source.stats.last_error}), flush=True)
    try:
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()
    finally:
        await source.stop()
        if args.record:
            Path(args.record).write_bytes(bytes(blob))
            Path(args.record + ".index.json").write_text(json.dumps(out))
        print(json.dumps({"stats": asdict(source.stats)}), flush=True)
    return 0


def run_cli(
    description: str,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    argv: list[str] | None = None,
) -> int:
    """The command line of this module and of `sa_lifecycle`: the same four options."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--netns", default=None, help="a named network namespace")
    ap.add_argument("--record", default=None, help="keep the raw datagrams in FILE")
    ap.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
    ap.add_argument("--rcvbuf", type=int, default=4 << 20, help="socket receive buffer, bytes")
    args = ap.parse_args(argv)
    # SIGTERM ends it as Ctrl-C does: the recording is written on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("Print the kernel's XFRM SA notifications.", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
