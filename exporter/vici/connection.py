"""One VICI connection over asyncio streams.

VICI has no request ids: a connection carries one command at a time. The daemon therefore
keeps one connection for requests (`ViciClient`) and another for the event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from vici.protocol import Packet

from exporter.vici.address import ViciAddress
from exporter.vici.codec import (
    HEADER,
    INLINE_DECODE_LIMIT,
    MAX_PACKET,
    Frame,
    ViciMessage,
    decode_packet,
    encode_register,
    encode_request,
    encode_unregister,
)
from exporter.vici.errors import ViciCommandError, ViciConnectionError, ViciProtocolError


class ViciConnection:
    """A single open VICI socket. Not safe for concurrent use: callers serialise."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, address: ViciAddress, timeout: float) -> ViciConnection:
        try:
            async with asyncio.timeout(timeout):
                if address.scheme == "unix":
                    reader, writer = await asyncio.open_unix_connection(address.path)
                else:
                    reader, writer = await asyncio.open_connection(address.host, address.port)
        except TimeoutError as err:
            raise ViciConnectionError(f"connecting to {address} timed out") from err
        except OSError as err:
            reason = err.strerror or str(err)
            raise ViciConnectionError(f"cannot connect to {address}: {reason}") from err
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    def abort(self) -> None:
        """Close without waiting (from synchronous code), also with unsent data queued
        for a peer that stopped reading: the reader then sees the end of the stream."""
        self._writer.transport.abort()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def _send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, ConnectionError) as err:
            raise ViciConnectionError(f"VICI write failed: {err}") from err

    async def receive(self) -> Frame:
        """Read the next packet, whatever its kind."""
        try:
            header = await self._reader.readexactly(HEADER.size)
            (length,) = HEADER.unpack(header)
            if length > MAX_PACKET:
                raise ViciProtocolError(
                    f"VICI packet of {length} bytes exceeds the {MAX_PACKET} byte limit"
                )
            packet = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as err:
            raise ViciConnectionError("charon closed the VICI connection") from err
        except (OSError, ConnectionError) as err:
            raise ViciConnectionError(f"VICI read failed: {err}") from err
        if length > INLINE_DECODE_LIMIT:
            # Up to ~0.3 s of Python at MAX_PACKET: in a thread, the loop keeps serving
            # (the GIL is handed back every few milliseconds).
            return await asyncio.to_thread(decode_packet, packet)
        return decode_packet(packet)

    async def _receive_reply(self, command: str) -> ViciMessage:
        frame = await self.receive()
        if frame.kind == Packet.CMD_UNKNOWN:
            raise ViciCommandError(f"charon does not know the command {command!r}")
        if frame.kind != Packet.CMD_RESPONSE:
            raise ViciProtocolError(f"expected a response to {command!r}, got packet {frame.kind}")
        return frame.message

    async def send_request(self, command: str) -> None:
        """Send a command without reading its answer: on the event connection the answer
        comes between events, and the reader there takes it."""
        await self._send(encode_request(command))

    async def request(self, command: str, message: dict[str, Any] | None = None) -> ViciMessage:
        await self._send(encode_request(command, message))
        reply = await self._receive_reply(command)
        if reply.get("success") == "no":
            raise ViciCommandError(f"{command} failed: {reply.get('errmsg', 'no reason given')}")
        return reply

    async def streamed_request(
        self,
        command: str,
        event: str,
        message: dict[str, Any] | None = None,
        each: Callable[[ViciMessage], Any] | None = None,
    ) -> list[Any]:
        """Run a command that streams its answer as events, e.g. list-sas → list-sa.

        `each` turns every event into what the caller keeps, as it arrives: thousands of
        decoded SAs then never sit in memory all at once.
        """
        await self.register(event)
        items: list[Any] = []
        await self._send(encode_request(command, message))
        failure: ViciCommandError | None = None
        while True:
            frame = await self.receive()
            if frame.kind == Packet.EVENT and frame.name == event:
                items.append(each(frame.message) if each is not None else frame.message)
                continue
            if frame.kind == Packet.CMD_UNKNOWN:
                failure = ViciCommandError(f"charon does not know the command {command!r}")
            elif frame.kind != Packet.CMD_RESPONSE:
                raise ViciProtocolError(f"unexpected packet {frame.kind} during {command!r}")
            elif frame.message.get("success") == "no":
                reason = frame.message.get("errmsg", "no reason given")
                failure = ViciCommandError(f"{command} failed: {reason}")
            break
        # Unregister also after a refused command, so the connection stays usable.
        await self.unregister(event)
        if failure is not None:
            raise failure
        return items

    async def register(self, event: str) -> None:
        await self._send(encode_register(event))
        await self._confirm(event, "register for")

    async def unregister(self, event: str) -> None:
        await self._send(encode_unregister(event))
        await self._confirm(event, "unregister from")

    async def _confirm(self, event: str, verb: str) -> None:
        frame = await self.receive()
        if frame.kind == Packet.EVENT_UNKNOWN:
            raise ViciCommandError(f"charon cannot {verb} the event {event!r}")
        if frame.kind != Packet.EVENT_CONFIRM:
            raise ViciProtocolError(f"expected confirmation for {event!r}, got packet {frame.kind}")
