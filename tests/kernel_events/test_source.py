"""XfrmEventSource: delivery in order, ENOBUFS (drain, then ResyncNeeded), reconnect with
backoff, start/stop; and a real NETLINK_XFRM subscription on this host (its kernel has no
ESP, so real notifications come only from the guest: test_recorded.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import subprocess
import uuid
from collections import deque
from collections.abc import Iterator

import pytest

from exporter.kernel.model import XfrmState
from exporter.kernel.netlink import NetnsGone
from exporter.kernel.sa_lifecycle import SaLedger
from exporter.kernel.xfrm_events import (
    DEFAULT_GROUPS,
    ResyncingFeed,
    ResyncNeeded,
    SaAdded,
    SasFlushed,
    XfrmEvent,
    XfrmEventSource,
    group_mask,
    open_socket,
)

XFRM_MSG_FLUSHSA = 0x1C


def flush_msg(proto: int = 255, seq: int = 0) -> bytes:
    """An XFRM_MSG_FLUSHSA notification as the kernel builds it (xfrm_notify_sa_flush)."""
    payload = struct.pack("=B3x", proto)
    return struct.pack("=IHHII", 16 + len(payload), XFRM_MSG_FLUSHSA, 0, seq, 0) + payload


class FakeSock:
    """A datagram socketpair end standing in for the netlink socket; `errors` are raised
    by recv() (when the fd is readable) before any queued datagram."""

    opened: list[FakeSock] = []

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.a.setblocking(False)
        self.errors: deque[OSError] = deque()
        self.closed = False

    def fileno(self) -> int:
        return self.a.fileno()

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self.errors:
            raise self.errors.popleft()
        return self.a.recv(bufsize)

    def close(self) -> None:
        self.closed = True
        self.a.close()
        self.b.close()

    def feed(self, data: bytes) -> None:
        self.b.send(data)


class Opener:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.socks: list[FakeSock] = []

    def __call__(self, netns: str | None, groups: tuple[int, ...], rcvbuf: int) -> FakeSock:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise PermissionError(errno.EPERM, "no")
        sock = FakeSock()
        self.socks.append(sock)
        return sock


async def until(pred: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def make(opener: Opener) -> tuple[XfrmEventSource, list[XfrmEvent]]:
    got: list[XfrmEvent] = []
    source = XfrmEventSource(
        got.append, opener=opener, backoff_initial=0.01, backoff_max=0.05, clock=lambda: 42.0
    )
    return source, got


def test_events_delivered_in_order_after_the_start_marker() -> None:
    async def run() -> None:
        opener = Opener()
        source, got = make(opener)
        assert await source.start()
        sock = opener.socks[0]
        sock.feed(flush_msg(255))
        sock.feed(flush_msg(50) + flush_msg(51))
        await until(lambda: len(got) == 4)
        assert got == [
            ResyncNeeded("start", 42.0),
            SasFlushed(None, 42.0),
            SasFlushed("esp", 42.0),
            SasFlushed("ah", 42.0),
        ]
        assert source.stats.datagrams == 2 and source.stats.subscribed
        await source.stop()
        assert sock.closed and not source.stats.subscribed

    asyncio.run(run())


def test_enobufs_drains_what_is_queued_then_asks_for_a_resync() -> None:
    async def run() -> None:
        opener = Opener()
        source, got = make(opener)
        await source.start()
        sock = opener.socks[0]
        sock.errors.append(OSError(errno.ENOBUFS, "No buffer space available"))
        sock.feed(flush_msg(50))
        sock.feed(flush_msg(51))
        await until(lambda: len(got) == 4)
        assert [type(e).__name__ for e in got] == [
            "ResyncNeeded",
            "SasFlushed",
            "SasFlushed",
            "ResyncNeeded",
        ]
        assert got[-1] == ResyncNeeded("overflow", 42.0)
        assert source.stats.overflows == 1 and source.stats.failures == 0
        assert opener.calls == 1  # the socket stays
        await source.stop()

    asyncio.run(run())


def test_socket_failure_reconnects_with_a_resync() -> None:
    async def run() -> None:
        opener = Opener()
        source, got = make(opener)
        await source.start()
        first = opener.socks[0]
        first.errors.append(OSError(errno.EBADF, "gone"))
        first.feed(b"x")
        await until(lambda: opener.calls == 2 and len(got) == 2)
        assert got[-1] == ResyncNeeded("reconnect", 42.0)
        assert first.closed and source.stats.failures == 1 and source.stats.subscriptions == 2
        opener.socks[1].feed(flush_msg(50))
        await until(lambda: len(got) == 3)
        await source.stop()

    asyncio.run(run())


def test_subscription_refused_is_retried_with_backoff() -> None:
    async def run() -> None:
        opener = Opener(fail_first=3)
        source, got = make(opener)
        assert not await source.start()
        assert source.stats.last_error == "PermissionError: [Errno 1] no"
        await until(lambda: source.stats.subscribed)
        assert opener.calls == 4
        assert got == [ResyncNeeded("reconnect", 42.0)]
        await source.stop()

    asyncio.run(run())


def test_garbage_and_handler_errors_do_not_stop_the_source() -> None:
    async def run() -> None:
        opener = Opener()
        got: list[XfrmEvent] = []

        def handler(event: XfrmEvent) -> None:
            if isinstance(event, SasFlushed) and event.proto == "esp":
                raise RuntimeError("consumer bug")
            got.append(event)

        source = XfrmEventSource(handler, opener=opener, clock=lambda: 1.0)
        await source.start()
        sock = opener.socks[0]
        sock.feed(b"\xff" * 40)
        sock.feed(flush_msg(50))
        sock.feed(flush_msg(51))
        await until(lambda: len(got) == 2)
        assert source.stats.handler_errors == 1
        assert source.stats.undecodable == 1
        await source.stop()

    asyncio.run(run())


def test_recorder_sees_every_datagram_as_received() -> None:
    async def run() -> None:
        opener = Opener()
        seen: list[tuple[bytes, float]] = []
        source = XfrmEventSource(
            lambda e: None, opener=opener, recorder=lambda d, t: seen.append((d, t))
        )
        await source.start()
        opener.socks[0].feed(flush_msg(50))
        await until(lambda: len(seen) == 1)
        assert seen[0][0] == flush_msg(50)
        await source.stop()

    asyncio.run(run())


# --- the real socket ---------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="joining XFRM groups needs root")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"xev-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_group_mask() -> None:
    assert group_mask(DEFAULT_GROUPS) == 0b110


@needs_root
def test_real_subscription_in_a_named_netns(netns: str) -> None:
    """The kernel accepts the subscription in a netns of ours: bound to the SA and
    EXPIRE groups, non-blocking, nothing queued."""
    sock = open_socket(netns, DEFAULT_GROUPS, 1 << 20)
    try:
        assert sock.getsockname()[1] == 0b110
        with pytest.raises(BlockingIOError):
            sock.recv(1 << 16)
    finally:
        sock.close()


def test_missing_netns_is_named() -> None:
    with pytest.raises(NetnsGone):
        open_socket("no-such-netns-xev", DEFAULT_GROUPS, 1 << 20)


@needs_root
def test_live_source_in_a_netns_starts_and_stops(netns: str) -> None:
    async def run() -> None:
        got: list[XfrmEvent] = []
        source = XfrmEventSource(got.append, netns=netns)
        assert await source.start()
        assert isinstance(got[0], ResyncNeeded) and got[0].reason == "start"
        await source.stop()
        assert not source.stats.subscribed and not isinstance(got[-1], SaAdded)

    asyncio.run(run())


# --- ResyncingFeed ------------------------------------------------------------------------


def _state(spi: int, src: str, dst: str, added_at: float = 10.0) -> XfrmState:
    return XfrmState(
        src=src,
        dst=dst,
        spi=spi,
        proto="esp",
        mode="transport",
        reqid=1,
        bytes=0,
        packets=0,
        added_at=added_at,
        replay_window_errors=0,
        replay_errors=0,
        integrity_errors=0,
    )


def test_feed_holds_events_back_while_the_dump_is_in_flight() -> None:
    """A state added after the dump was taken must not be undone by that dump's resync:
    its notification is applied after it. A failed dump is retried."""

    async def run() -> None:
        ledger = SaLedger()
        release = asyncio.Event()
        calls = 0
        a_in = _state(0x100, "198.51.100.7", "192.0.2.1")
        a_out = _state(0x101, "192.0.2.1", "198.51.100.7")

        async def dump() -> list[XfrmState]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError(errno.EAGAIN, "busy")
            await release.wait()
            return []  # taken before A was installed

        feed = ResyncingFeed(ledger, dump=dump, retry=0.01, clock=lambda: 5.0)
        feed(ResyncNeeded("start", 1.0))
        feed(SaAdded(a_in, 2.0))
        feed(SaAdded(a_out, 2.0))
        assert not ledger.live()  # held back
        release.set()
        await feed.idle()
        assert calls == 2 and feed.dump_errors == 1 and feed.resyncs == 1
        (sa,) = ledger.live()
        assert len(sa.states) == 2
        assert ledger.counts().drops == 0 and not ledger.needs_resync

    asyncio.run(run())
