"""Turning VICI packets into plain Python values and back, on top of `vici.protocol`.

The `vici` package's codec does no I/O; this module adds only what the asyncio transport
needs: the length-prefixed framing and values decoded from bytes to text.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from vici.exception import DeserializationException
from vici.protocol import Message, Packet

from exporter.vici.errors import ViciProtocolError

HEADER = struct.Struct("!I")
#: charon's own limit for one VICI message is 512 KiB per segment; an answer above
#: this bound is not from charon and would only exhaust memory.
MAX_PACKET = 8 * 1024 * 1024

#: A decoded VICI message: keys to text, lists of text, or nested sections.
ViciValue = str | list[str] | dict[str, Any]
ViciMessage = dict[str, Any]


@dataclass(frozen=True)
class Frame:
    kind: int
    name: str
    message: ViciMessage


def encode_request(command: str, message: dict[str, Any] | None = None) -> bytes:
    payload = Message.serialize(message) if message else None
    return frame(Packet.request(command, payload))


def encode_register(event: str) -> bytes:
    return frame(Packet.register_event(event))


def encode_unregister(event: str) -> bytes:
    return frame(Packet.unregister_event(event))


def frame(packet: bytes) -> bytes:
    return HEADER.pack(len(packet)) + packet


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        # Lossless: binary values (certificates) can be recovered with surrogateescape.
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    return value


class _StrictStream(io.BytesIO):
    """The stream shape `Message.deserialize` reads, minus a flaw of `vici.protocol`'s own:
    that one returns short reads silently, so a cut packet would decode into a plausible
    but wrong message."""

    def has_more(self) -> bool:
        return self.tell() < len(self.getbuffer())

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if size is not None and size >= 0 and len(data) != size:
            raise ViciProtocolError("VICI packet ends in the middle of an element")
        return data


def decode_packet(packet: bytes) -> Frame:
    """Decode one packet (without its length header) into a `Frame`."""
    if not packet:
        raise ViciProtocolError("empty VICI packet")
    stream = _StrictStream(packet)
    try:
        kind = stream.read(1)[0]
        name = ""
        if kind in (Packet.EVENT, Packet.EVENT_REGISTER, Packet.CMD_REQUEST):
            name = stream.read(stream.read(1)[0]).decode("utf-8", errors="replace")
        message: ViciMessage = {}
        if kind in (Packet.CMD_RESPONSE, Packet.EVENT):
            message = _text(Message.deserialize(stream))
        return Frame(kind=kind, name=name, message=message)
    except (DeserializationException, struct.error, UnicodeDecodeError) as err:
        raise ViciProtocolError(f"malformed VICI packet: {err}") from err
