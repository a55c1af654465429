"""An in-process VICI server that answers with a real charon's recorded answers.

For unit tests of what only ran against a real charon before: the VICI client's
reconnects, the background refresher's schedule, the event stream's loss and liveness
question, reload. It listens on a Unix socket (in the test's tmp_path) in the test's own
event loop, decodes each packet with the exporter's codec (exporter/vici/codec.py) and
answers every command with charon's recorded answer (tests/fixtures/vici/<scenario>/):
`list-sas`, `list-conns` and `list-certs` as their streamed events (to a connection that
registered for them, as charon does) and then the response; a command without a recording
as charon answers an unknown one. Events recorded from charon (tests/fixtures/vici-events/)
go to every connection registered for them.

A test steers it and waits on what it saw:
- `hold()` stops answering (everything, or what names given commands or events) the way a
  stopped charon does: the connection reads nothing further until `resume()`;
- `drop()` closes connections (all, or the event stream's); with `hang_up` set it closes
  every connection at its first packet (a peer that accepts and never answers);
- `send_events()` writes events to the connections registered for them;
- `asked` logs every packet received, in order; `count()` and `wait_until()` synchronise
  on it (no sleeps).

tests/hostile/fake_charon.py is another kind of peer: threaded, with fixed answers, it
floods the event stream as fast as the exporter reads (memory bounds, bench/soak.py); it
sends its frames with this module's encoders.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from vici.protocol import Message, Packet

from exporter.vici.address import ViciAddress
from exporter.vici.codec import HEADER, MAX_PACKET, ViciMessage, decode_packet, frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: Streamed commands and the event each item of their answer comes as.
STREAMED = {"list-sas": "list-sa", "list-conns": "list-conn", "list-certs": "list-cert"}
#: The exporter's event stream registers for this (among others): a connection that did
#: is the event stream's.
STREAM_EVENT = "ike-updown"

#: A message as the fake sends it: text, bytes (a certificate's DER), lists, sections.
Sendable = Mapping[str, Any]


def _from_json(value: Any) -> Any:
    """A recording's JSON back into what charon sent: `{"$base64": ...}` is raw bytes."""
    if isinstance(value, dict):
        if set(value) == {"$base64"}:
            return base64.b64decode(value["$base64"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@dataclass
class Recording:
    """What the fake answers: a response per command, or the events of a streamed one.

    Mutable: a test may change the listing (`streams["list-sas"]`) between questions.
    """

    answers: dict[str, Sendable]
    streams: dict[str, list[Sendable]]
    #: `get-counters` with `all=yes` (per connection); without it, the global counters.
    counters_per_connection: Sendable | None = None

    @classmethod
    def scenario(cls, name: str = "remote-access") -> Recording:
        """One of tests/fixtures/vici/ (see its README)."""
        folder = FIXTURES / "vici" / name
        loaded = {p.stem: _from_json(json.loads(p.read_text())) for p in folder.glob("*.json")}
        per_connection = loaded.pop("get-counters", None)
        if "get-counters-global" in loaded:
            loaded["get-counters"] = loaded.pop("get-counters-global")
        streams = {command: loaded.pop(command) for command in STREAMED if command in loaded}
        return cls(loaded, streams, per_connection)

    def answer(
        self, command: str, arguments: Mapping[str, Any]
    ) -> tuple[list[Sendable], Sendable] | None:
        """The streamed events and the response to `command`; None: unknown to charon."""
        if command == "get-counters" and arguments.get("all") == "yes":
            per_connection = self.counters_per_connection
            return None if per_connection is None else ([], per_connection)
        if command in self.streams:
            return self.streams[command], {}
        if command in self.answers:
            return [], self.answers[command]
        return None


def recorded_events(name: str) -> tuple[list[Sendable], list[tuple[str, Sendable]]]:
    """A recording of tests/fixtures/vici-events/: charon's listing when it started and
    its events, in order."""
    data = json.loads((FIXTURES / "vici-events" / f"{name}.json").read_text())
    events = [(e["event"], _from_json(e["message"])) for e in data["events"]]
    return _from_json(data["list-sas-before"]), events


def encode_response(message: Sendable) -> bytes:
    return frame(bytes([Packet.CMD_RESPONSE]) + Message.serialize(message))


def encode_event(name: str, message: Sendable) -> bytes:
    raw = name.encode()
    return frame(bytes([Packet.EVENT, len(raw)]) + raw + Message.serialize(message))


@dataclass(frozen=True)
class Asked:
    """One packet a client sent the fake."""

    #: Its place among every packet the fake received (from 1).
    seq: int
    #: The connection it came on (numbered from 1 in the order they were accepted).
    connection: int
    #: Packet.CMD_REQUEST, EVENT_REGISTER or EVENT_UNREGISTER.
    kind: int
    #: The command, or the event (un)registered.
    name: str
    arguments: ViciMessage
    #: The loop's clock (time.monotonic) when it arrived.
    at: float


class _Connection:
    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.registered: set[str] = set()
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()


class FakeViciServer:
    """Serves `path` from the running loop between `start()` and `close()` (or as an
    async context manager)."""

    def __init__(self, path: Path, recording: Recording | None = None) -> None:
        self.path = path
        self.recording = recording or Recording.scenario()
        #: Every packet received, in order.
        self.asked: list[Asked] = []
        #: Close each connection at its first packet, unanswered.
        self.hang_up = False
        self.connections_opened = 0
        #: Packets answered (an answer may go to a connection its client already left).
        self.answered = 0
        self._connections: dict[int, _Connection] = {}
        #: Names held unanswered; None: everything.
        self._held: frozenset[str] | None = frozenset()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tick = asyncio.Event()

    @property
    def address(self) -> ViciAddress:
        return ViciAddress("unix", path=str(self.path))

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> FakeViciServer:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in self._connections.values():
            conn.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.path.unlink(missing_ok=True)

    async def __aenter__(self) -> FakeViciServer:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    # -- steering ---------------------------------------------------------------------------

    def hold(self, *names: str) -> None:
        """Stop answering: every packet (no `names`), or one naming a command or event in
        `names`. A held packet is not read past: its connection answers nothing more until
        `resume()`, as from a stopped charon (and a client hanging up on it is seen then)."""
        self._held = frozenset(names) if names else None
        self._changed()

    def resume(self) -> None:
        self._held = frozenset()
        self._changed()

    def drop(self, *, event_stream_only: bool = False) -> int:
        """Close the open connections (only the event stream's): how many were closed."""
        dropped = [
            conn
            for conn in self._connections.values()
            if not event_stream_only or STREAM_EVENT in conn.registered
        ]
        for conn in dropped:
            conn.abort()
        self._changed()
        return len(dropped)

    def send_events(self, events: Iterable[tuple[str, Sendable]]) -> int:
        """Write each event to the connections registered for it: how many were written."""
        written = 0
        for name, message in events:
            data = encode_event(name, message)
            for conn in self._connections.values():
                if name in conn.registered and not conn.closed:
                    conn.send(data)
                    written += 1
        return written

    # -- what it was asked ------------------------------------------------------------------

    def count(self, name: str, kind: int = Packet.CMD_REQUEST, after: int = 0) -> int:
        """How many packets of `kind` named `name` arrived after packet number `after`."""
        return sum(1 for a in self.asked if a.kind == kind and a.name == name and a.seq > after)

    def last(self, name: str, kind: int = Packet.CMD_REQUEST) -> Asked | None:
        return next((a for a in reversed(self.asked) if a.kind == kind and a.name == name), None)

    @property
    def stream_registrations(self) -> list[Asked]:
        """The event stream's registrations, one per connection, in order."""
        return [a for a in self.asked if a.kind == Packet.EVENT_REGISTER and a.name == STREAM_EVENT]

    @property
    def open_connections(self) -> list[int]:
        return [n for n, conn in self._connections.items() if not conn.closed]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once `predicate()` holds, checked at every change the fake sees (a packet,
        a connection opened or closed); AssertionError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    tick = self._tick
                    if predicate():
                        return
                    await tick.wait()
        except TimeoutError:
            seen = ", ".join(f"{a.connection}:{a.name}" for a in self.asked[-12:])
            raise AssertionError(
                f"not within {timeout:g} s; the fake's last packets (connection:name): {seen}"
            ) from None

    # -- serving ----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _is_held(self, name: str) -> bool:
        return self._held is None or name in self._held

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections_opened += 1
        conn = _Connection(self.connections_opened, writer)
        self._connections[conn.number] = conn
        self._changed()
        try:
            while not conn.closed:
                asked = await self._receive(reader, conn)
                self.asked.append(asked)
                self._changed()
                if self.hang_up:
                    break
                while self._is_held(asked.name) and not conn.closed:
                    await self._tick.wait()
                self._answer(conn, asked)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away (or the fake dropped it)
        finally:
            conn.abort()
            self._changed()
            if task is not None:
                self._tasks.discard(task)

    async def _receive(self, reader: asyncio.StreamReader, conn: _Connection) -> Asked:
        (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > MAX_PACKET:
            raise ConnectionError(f"a packet of {length} bytes")
        packet = await reader.readexactly(length)
        decoded = decode_packet(packet)
        arguments: ViciMessage = {}
        if decoded.kind == Packet.CMD_REQUEST and len(packet) > 2 + packet[1]:
            # The codec decodes the message of an answer or event only; a command's
            # arguments are the same elements after its name.
            elements = packet[2 + packet[1] :]
            arguments = decode_packet(bytes([Packet.CMD_RESPONSE]) + elements).message
        loop = asyncio.get_running_loop()
        seq = len(self.asked) + 1
        return Asked(seq, conn.number, decoded.kind, decoded.name, arguments, loop.time())

    def _answer(self, conn: _Connection, asked: Asked) -> None:
        self.answered += 1
        self._changed()
        if asked.kind == Packet.EVENT_REGISTER:
            conn.registered.add(asked.name)
            conn.send(frame(bytes([Packet.EVENT_CONFIRM])))
        elif asked.kind == Packet.EVENT_UNREGISTER:
            conn.registered.discard(asked.name)
            conn.send(frame(bytes([Packet.EVENT_CONFIRM])))
        elif asked.kind == Packet.CMD_REQUEST:
            reply = self.recording.answer(asked.name, asked.arguments)
            if reply is None:
                conn.send(frame(bytes([Packet.CMD_UNKNOWN])))
                return
            items, response = reply
            event = STREAMED.get(asked.name)
            if event is not None and event in conn.registered:
                conn.send(b"".join(encode_event(event, item) for item in items))
            conn.send(encode_response(response))
        else:  # an answer or an event from a client: charon hangs up on that
            conn.abort()


async def eventually(
    check: Callable[[], Any], what: str, timeout: float = 10.0, every: float = 0.005
) -> None:
    """Return once `check()` is true; AssertionError naming `what` after `timeout` seconds.

    For conditions in the exporter (a gauge in a scrape) that nothing signals: the timeout
    only bounds a failure, a passing test waits exactly as long as the exporter takes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _true(check):
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(every)


async def _true(check: Callable[[], Any]) -> bool:
    result = check()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


__all__ = [
    "Asked",
    "FakeViciServer",
    "Recording",
    "encode_event",
    "encode_response",
    "eventually",
    "recorded_events",
]
