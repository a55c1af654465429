"""The VICI decoder and transport fed what a broken or hostile peer could send.

Contract: `decode_packet` returns a `Frame` or raises `ViciProtocolError`;
`ViciConnection.receive` returns a `Frame` or raises a `ViciError`, refuses a packet
above `MAX_PACKET` from its header alone (without buffering it), and never waits past
the caller's deadline. Against a peer on a real socket that sends garbage, deep nesting or
nothing at all: the connection is dropped with a backoff that keeps growing, scrapes in
background mode never wait on it, `strongswan_up` says 0, and a silent charon takes the
event stream down within the VICI timeout plus the liveness interval.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from vici.protocol import Message, Packet

from exporter.vici.codec import HEADER, MAX_PACKET, Frame, decode_packet
from exporter.vici.connection import ViciConnection
from exporter.vici.errors import ViciConnectionError, ViciError, ViciProtocolError

from .helpers import HOSTILE, HOSTILE_STRUCTURED, no_hang

PACKETS = Path(__file__).resolve().parents[1] / "fixtures" / "vici-packets"
RECORDED = [p.read_bytes() for p in sorted(PACKETS.glob("*.bin"))]

names = st.text(st.characters(codec="utf-8"), max_size=12)
blobs = st.binary(max_size=64)
vici_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(blobs, st.lists(blobs, max_size=4)),
    lambda inner: st.dictionaries(names, inner, max_size=4),
    max_leaves=8,
)
vici_messages = st.dictionaries(names, vici_values, max_size=6)


def decode_or_protocol_error(packet: bytes) -> Frame | None:
    with no_hang():
        try:
            return decode_packet(packet)
        except ViciProtocolError:
            return None


@HOSTILE
@given(st.binary(max_size=512))
@example(b"")
@example(bytes([Packet.CMD_RESPONSE, Message.SECTION_END]))
@example(bytes([Packet.CMD_RESPONSE, Message.LIST_START, 1, 0x61, Message.LIST_ITEM]))
@example(bytes([Packet.EVENT, 200]))
def test_random_bytes(packet: bytes) -> None:
    decode_or_protocol_error(packet)


@HOSTILE_STRUCTURED
@given(vici_messages)
def test_well_formed_messages_round_trip(message: dict[str, Any]) -> None:
    packet = bytes([Packet.CMD_RESPONSE]) + Message.serialize(message)
    frame = decode_or_protocol_error(packet)
    assert frame is not None and frame.kind == Packet.CMD_RESPONSE
    assert set(frame.message) == {k.encode().decode() for k in message}


@HOSTILE_STRUCTURED
@given(vici_messages, st.data())
def test_truncated_messages(message: dict[str, Any], data: st.DataObject) -> None:
    packet = bytes([Packet.EVENT, 4]) + b"list" + Message.serialize(message)
    cut = data.draw(st.integers(0, len(packet) - 1))
    # Cut on an element boundary it may still decode (to a shorter message); otherwise
    # ViciProtocolError — never a plausible-looking message from a half-read element.
    decode_or_protocol_error(packet[:cut])


@HOSTILE
@given(st.sampled_from(RECORDED), st.data())
def test_mutated_recorded_packets(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
    decode_or_protocol_error(bytes(mutated))


def test_recorded_packets_decode() -> None:
    assert RECORDED
    for packet in RECORDED:
        assert decode_or_protocol_error(packet) is not None


# ---- the transport: ViciConnection.receive over a StreamReader -----------------------------


class _NullWriter:
    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    async def wait_closed(self) -> None:
        pass


def connection(data: bytes, eof: bool = True) -> ViciConnection:
    reader = asyncio.StreamReader(limit=2**16)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return ViciConnection(reader, _NullWriter())  # type: ignore[arg-type]


async def receive_all(conn: ViciConnection, deadline: float = 2.0) -> list[Frame]:
    frames = []
    async with asyncio.timeout(deadline):
        while True:
            try:
                frames.append(await conn.receive())
            except ViciConnectionError:
                return frames  # end of stream
            except ViciError:
                return frames


@HOSTILE
@given(st.binary(max_size=2048))
async def test_receive_random_stream(data: bytes) -> None:
    await receive_all(connection(data))


@HOSTILE_STRUCTURED
@given(st.lists(vici_messages, min_size=1, max_size=4), st.data())
async def test_receive_framed_stream_cut_anywhere(
    messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(
        HEADER.pack(len(p)) + p
        for p in (bytes([Packet.CMD_RESPONSE]) + Message.serialize(m) for m in messages)
    )
    cut = data.draw(st.integers(0, len(stream)))
    frames = await receive_all(connection(stream[:cut]))
    assert len(frames) <= len(messages)
    if cut == len(stream):
        assert len(frames) == len(messages)


@HOSTILE
@given(st.integers(MAX_PACKET + 1, 2**32 - 1))
async def test_oversized_packet_refused_from_its_header(length: int) -> None:
    # Only the header is there: the refusal must not wait for (or buffer) the body.
    conn = connection(HEADER.pack(length), eof=False)
    async with asyncio.timeout(1):
        with pytest.raises(ViciProtocolError, match="exceeds"):
            await conn.receive()


async def test_packet_at_the_limit_is_read() -> None:
    body = bytes([Packet.CMD_RESPONSE]) + Message.serialize({"k": b"x" * 1000})
    conn = connection(HEADER.pack(len(body)) + body)
    assert (await conn.receive()).message == {"k": "x" * 1000}


async def test_a_peer_that_stops_sending_is_bounded_by_the_callers_deadline() -> None:
    conn = connection(HEADER.pack(100) + b"\x01" * 10, eof=False)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await conn.receive()


async def test_wrong_kind_of_answer_to_a_request() -> None:
    event = bytes([Packet.EVENT, 3]) + b"log" + Message.serialize({"a": b"b"})
    conn = connection(HEADER.pack(len(event)) + event)
    conn._send = _no_send  # type: ignore[method-assign]
    with pytest.raises(ViciProtocolError):
        await conn.request("version")


async def _no_send(data: bytes) -> None:
    pass


def test_header_format() -> None:
    assert HEADER.size == 4 and HEADER.pack(1) == struct.pack("!I", 1)


# ---- a hostile or hung VICI peer on a real socket (issue 14, items 3, 4, 5, 7) --------------


def nested(depth: int) -> bytes:
    """`depth` sections, each inside the one before: `a { a { ... } }`."""
    return bytes([Message.SECTION_START, 1, 0x61]) * depth + bytes([Message.SECTION_END]) * depth


def worst_case_packet() -> bytes:
    """A response of exactly `MAX_PACKET` bytes of the cheapest elements (empty list items,
    3 bytes each): the most decoder work a peer can ask for in one frame."""
    head = bytes([Packet.CMD_RESPONSE, Message.LIST_START, 1, 0x6C])
    items = (MAX_PACKET - len(head) - 1) // 3
    rest = MAX_PACKET - len(head) - 1 - 3 * items
    last = bytes([Message.LIST_ITEM]) + rest.to_bytes(2, "big")  # rest more bytes of value
    body = head + bytes([Message.LIST_ITEM, 0, 0]) * (items - 1) + last + b"x" * rest
    packet = body + bytes([Message.LIST_END])
    assert len(packet) == MAX_PACKET
    return packet


async def test_loop_keeps_running_while_a_frame_at_the_maximum_decodes() -> None:
    packet = worst_case_packet()
    conn = connection(HEADER.pack(len(packet)) + packet)
    ticks = 0

    async def other_work() -> None:  # stands for scrapes and the event stream
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = ticks
    frame = await conn.receive()
    during = ticks - before
    task.cancel()
    assert len(frame.message["l"]) == (MAX_PACKET - 5) // 3
    # Inline, the decode ran from start to end without the loop running anything else.
    assert during >= 2, f"the loop ran other work {during} times during the decode"


class Peer:
    """A VICI server on a UNIX socket that answers what `script` says.

    `script(kind, name)` gets every packet the client sends (its type and name) and returns
    the packets to send back (unframed); None: say nothing (a hung charon).
    """

    def __init__(self, path: Path, script: Any) -> None:
        self.path = path
        self.script = script
        self.connections = 0
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> Any:
        from exporter.config import ViciAddress

        return ViciAddress("unix", path=str(self.path))

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        # Python 3.11's wait_closed does not wait for the handlers; they end on EOF.

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                packet = await reader.readexactly(length)
                kind = packet[0]
                name = packet[2 : 2 + packet[1]].decode() if len(packet) > 1 else ""
                if kind == Packet.CMD_REQUEST:
                    self.requests.append(name)
                for answer in self.script(kind, name) or ():
                    writer.write(HEADER.pack(len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


CONFIRM = bytes([Packet.EVENT_CONFIRM])
VERSION = (PACKETS / "version-response.bin").read_bytes()


def confirm_registrations(then: bytes | None = None, answer_version: bool = True) -> Any:
    """Confirms every (un)registration; after the 4th registration sends `then`."""
    registered = [0]

    def script(kind: int, _name: str) -> list[bytes] | None:
        if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
            registered[0] += kind == Packet.EVENT_REGISTER
            if registered[0] % 4 == 0 and then is not None:
                return [CONFIRM, then]
            return [CONFIRM]
        if kind == Packet.CMD_REQUEST and answer_version:
            return [VERSION]
        return None

    return script


async def _no_reconcile() -> None:
    return None


def event_stream(peer: Peer, backoff: Any = None, timeout: float = 2.0, **kwargs: Any) -> Any:
    from exporter.strongswan.event_stream import EventStream
    from exporter.strongswan.ledger import SaLedger

    ledger = SaLedger(reauth_grace=0)
    return EventStream(
        peer.address,
        timeout,
        on_event=ledger.apply,
        on_subscribed=_no_reconcile,
        backoff=backoff,
        **kwargs,
    )


async def wait_until(check: Any, deadline: float) -> None:
    async with asyncio.timeout(deadline):
        while not check():
            await asyncio.sleep(0.01)


async def test_deep_nesting_drops_the_event_stream_and_keeps_its_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from exporter.vici import Backoff

    event = bytes([Packet.EVENT, 10]) + b"ike-updown" + nested(5000)
    backoff = Backoff(initial=0.01, maximum=0.04)
    async with Peer(tmp_path / "charon.vici", confirm_registrations(then=event)) as peer:
        stream = event_stream(peer, backoff)
        stream.start()
        try:
            await wait_until(lambda: peer.connections >= 5, deadline=10)
        finally:
            await stream.stop()
    # Every connection died at once after connecting: the delay grew and never reset.
    assert backoff.delay == backoff.maximum
    assert not stream.up
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert problems[0].exc_info is None and "nest" in str(problems[0].__dict__.get("err"))


def strongswan_collector(peer: Peer, refresh_interval: float, timeout: float) -> Any:
    """The collector and the view of charon it renders (events off)."""
    from exporter.collectors.strongswan import StrongswanCollector
    from exporter.config import StrongswanOptions
    from exporter.strongswan.view import CharonView

    options = StrongswanOptions(refresh_interval=refresh_interval, events=False)
    view = CharonView(peer.address, timeout, options)
    return view, StrongswanCollector(view, options)


def strongswan_up(collection: Any) -> float | None:
    for family in collection.families:
        if family.name == "strongswan_up":
            return float(family.samples[0].value)
    return None


async def test_deeply_nested_answer_leaves_strongswan_up_0(tmp_path: Path) -> None:
    answer = bytes([Packet.CMD_RESPONSE]) + nested(5000)
    async with Peer(tmp_path / "charon.vici", lambda kind, name: [answer]) as peer:
        view, collector = strongswan_collector(peer, refresh_interval=0, timeout=2)
        for _ in range(2):
            collection = await collector.collect()
            assert strongswan_up(collection) == 0
            assert not collection.success and "nest" in collection.error
        await view.close()


async def test_a_scrape_in_background_mode_never_waits_on_charon(tmp_path: Path) -> None:
    # A peer that accepts and never answers, and a timeout as good as `inf`.
    async with Peer(tmp_path / "charon.vici", lambda kind, name: None) as peer:
        view, collector = strongswan_collector(peer, refresh_interval=10, timeout=1e9)
        # Before the background refresher has even started: nothing known, nothing asked.
        async with asyncio.timeout(3):  # a hang bound, not a timing
            collection = await collector.collect()
        assert strongswan_up(collection) == 0 and peer.connections == 0
        view.start()
        try:
            await wait_until(lambda: peer.requests, deadline=3)
            # The refresher now waits on charon forever; scrapes still answer at once.
            async with asyncio.timeout(3):
                for _ in range(3):
                    assert strongswan_up(await collector.collect()) == 0
            assert peer.connections == 1 and peer.requests == ["version"]
        finally:
            await view.close()


async def test_event_stream_notices_a_charon_that_stops_answering(tmp_path: Path) -> None:
    async with Peer(tmp_path / "charon.vici", confirm_registrations(answer_version=False)) as peer:
        stream = event_stream(peer, timeout=0.3, liveness_interval=0.1)
        stream.start()
        try:
            await wait_until(lambda: stream.up, deadline=3)
            # Registered, then charon hangs: no event, no answer. Before, `up` stayed 1.
            await wait_until(lambda: not stream.up, deadline=5)
            assert "version" in peer.requests
        finally:
            await stream.stop()


async def test_event_stream_stays_up_while_charon_answers_its_liveness_question(
    tmp_path: Path,
) -> None:
    async with Peer(tmp_path / "charon.vici", confirm_registrations()) as peer:
        stream = event_stream(peer, timeout=0.3, liveness_interval=0.05)
        stream.start()
        try:
            await wait_until(lambda: stream.up, deadline=3)
            await wait_until(lambda: peer.requests.count("version") >= 10, deadline=5)
            assert stream.up and stream.reconnects == 0 and peer.connections == 1
        finally:
            await stream.stop()


async def test_request_client_keeps_its_backoff_against_a_peer_that_sends_garbage(
    tmp_path: Path,
) -> None:
    from exporter.vici import Backoff, ViciClient

    garbage = bytes([Packet.CMD_RESPONSE, 0xFF])
    now = [0.0]
    backoff = Backoff(initial=0.25, maximum=5.0)
    async with Peer(tmp_path / "charon.vici", lambda kind, name: [garbage]) as peer:
        client = ViciClient(peer.address, 2, backoff, clock=lambda: now[0])
        delays = []
        for _ in range(3):
            with pytest.raises(ViciProtocolError):
                await client.request("version")
            delays.append(backoff.delay)
            with pytest.raises(ViciConnectionError):  # within the delay: not even a connect
                await client.request("version")
            now[0] += backoff.delay
        await client.close()
    # Connecting worked every time, answering never did: the delay doubles.
    assert delays == [0.25, 0.5, 1.0]
    assert peer.connections == 3


async def test_exporter_against_a_peer_that_sends_deep_nesting(
    tmp_path: Path, start_exporter: Any
) -> None:
    """The issue's run, end to end: the real exporter process on a socket whose peer
    answers every question and event registration with 5,000 nested sections."""
    answer = bytes([Packet.CMD_RESPONSE]) + nested(5000)
    event = bytes([Packet.EVENT, 10]) + b"ike-updown" + nested(5000)
    registrations = confirm_registrations(then=event)

    def script(kind: int, name: str) -> list[bytes] | None:
        return [answer] if kind == Packet.CMD_REQUEST else registrations(kind, name)

    async with Peer(tmp_path / "charon.vici", script) as peer:
        exp = await asyncio.to_thread(start_exporter, f"unix://{peer.path}")
        await wait_until(lambda: peer.connections >= 3 and peer.requests, deadline=10)
        stream_up = []
        for _ in range(15):
            scrape = await asyncio.to_thread(exp.scrape)
            assert scrape.value("strongswan_up") == 0, scrape.text
            stream_up.append(scrape.value("strongswan_event_stream_up"))
            await asyncio.sleep(0.2)
        # The stream is subscribed for a moment after each (backed-off) reconnect, until
        # the hostile event arrives: a scrape may land in that moment (seen in 2 of ~6
        # full runs), but the stream never stays up.
        assert stream_up.count(1) <= 2 and stream_up[-2:] != [1, 1], stream_up
        connections = peer.connections
        await asyncio.to_thread(exp.stop)
    log = exp.stderr_text()
    assert "Traceback" not in log and "RecursionError" not in log, log
    # One line per outage from each part, not one per attempt; the stream backs off.
    assert log.count("event stream not connected") == 1, log
    assert connections < 15, f"{connections} connections in about 4 s: no backoff"
