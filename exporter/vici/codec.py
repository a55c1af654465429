"""Turning VICI packets into plain Python values and back.

Encoding uses `vici.protocol`. Decoding is this module's own: a peer on the VICI socket
(charon, or whatever listens there) is not trusted, and `vici.protocol`'s decoder skips
unknown element types one byte at a time, returns short reads silently, and leaves
nesting unbounded. This one walks the packet once, iteratively, over a memoryview, and
refuses anything charon does not send: a `ViciProtocolError`, never another exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from vici.protocol import Message, Packet

from exporter.vici.errors import ViciProtocolError

HEADER = struct.Struct("!I")
#: charon's own limit for one VICI segment (VICI_MESSAGE_SIZE_MAX = 512 * 1024 in
#: src/libcharon/plugins/vici/vici_socket.h; its send_() discards anything longer, and the
#: plugin's README says "The maximum segment length is currently limited to 512KB"). A
#: longer frame is not from charon: it is refused from its header, before it is buffered.
MAX_PACKET = 512 * 1024
#: Deepest section nesting accepted. charon's answers nest at most four deep (list-conns:
#: conn > children > child > ...); the protocol allows any depth, so a peer could make
#: every later walk over the message recurse without end.
MAX_DEPTH = 32
#: Packets longer than this are decoded in a worker thread (`ViciConnection.receive`), so
#: the event loop keeps serving scrapes while a large answer decodes. Below it the thread
#: hop costs more than the decode (a few hundred microseconds at 64 KiB).
INLINE_DECODE_LIMIT = 64 * 1024

#: A decoded VICI message: keys to text, lists of text, or nested sections.
ViciValue = str | list[str] | dict[str, Any]
ViciMessage = dict[str, Any]

_NAMED_PACKETS = frozenset((Packet.CMD_REQUEST, Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER))
_MESSAGE_PACKETS = frozenset((Packet.CMD_RESPONSE, Packet.EVENT))
_KNOWN_PACKETS = frozenset(range(Packet.CMD_REQUEST, Packet.EVENT + 1))

_SECTION_START = Message.SECTION_START
_SECTION_END = Message.SECTION_END
_KEY_VALUE = Message.KEY_VALUE
_LIST_START = Message.LIST_START
_LIST_ITEM = Message.LIST_ITEM
_LIST_END = Message.LIST_END
_NAMED_ELEMENTS = frozenset((_KEY_VALUE, _SECTION_START, _LIST_START))


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


class _Truncated(Exception):
    """An element runs past the end of the packet (turned into a ViciProtocolError)."""


def decode_packet(packet: bytes) -> Frame:
    """Decode one packet (without its length header) into a `Frame`."""
    if not packet:
        raise ViciProtocolError("empty VICI packet")
    kind = packet[0]
    if kind not in _KNOWN_PACKETS:
        raise ViciProtocolError(f"unknown VICI packet type {kind}")
    data = memoryview(packet)
    pos = 1
    name = ""
    try:
        if kind in _NAMED_PACKETS or kind == Packet.EVENT:
            name, pos = _name(data, pos)
        if kind in _MESSAGE_PACKETS:
            return Frame(kind, name, _message(data, pos))
    except _Truncated as err:
        raise ViciProtocolError("VICI packet ends in the middle of an element") from err
    except UnicodeDecodeError as err:
        raise ViciProtocolError(f"VICI name is not UTF-8 at byte {err.start}") from err
    except ViciProtocolError:
        raise
    except Exception as err:  # a gap in the checks above must still read as bad input
        raise ViciProtocolError(f"malformed VICI packet: {type(err).__name__}: {err}") from err
    if kind not in _NAMED_PACKETS and pos != len(packet):
        raise ViciProtocolError(f"VICI packet type {kind} carries {len(packet) - pos} bytes")
    return Frame(kind, name, {})


def _name(data: memoryview, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise _Truncated
    end = pos + 1 + data[pos]
    if end > len(data):
        raise _Truncated
    return str(data[pos + 1 : end], "utf-8"), end


def _message(data: memoryview, pos: int) -> ViciMessage:
    """The element loop, one pass, no recursion. Kept in one function on purpose: at
    512 KiB of the smallest elements, a call per element would double the decode time."""
    end = len(data)
    root: ViciMessage = {}
    section = root
    stack: list[ViciMessage] = []
    while pos < end:
        element = data[pos]
        if element in _NAMED_ELEMENTS:
            # A named element: 8-bit name length, the name.
            if pos + 1 >= end:
                raise _Truncated
            name_end = pos + 2 + data[pos + 1]
            if name_end > end:
                raise _Truncated
            key = str(data[pos + 2 : name_end], "utf-8")
            pos = name_end
            if element == _KEY_VALUE:
                # 16-bit value length, the value.
                if pos + 2 > end:
                    raise _Truncated
                value_end = pos + 2 + (data[pos] << 8 | data[pos + 1])
                if value_end > end:
                    raise _Truncated
                # Lossless: binary values (certificates) come back with surrogateescape.
                section[key] = str(data[pos + 2 : value_end], "utf-8", "surrogateescape")
                pos = value_end
            elif element == _SECTION_START:
                if len(stack) >= MAX_DEPTH:
                    raise ViciProtocolError(f"VICI sections nested deeper than {MAX_DEPTH}")
                child: ViciMessage = {}
                section[key] = child
                stack.append(section)
                section = child
            else:
                items: list[str] = []
                while True:
                    if pos >= end:
                        raise _Truncated
                    element = data[pos]
                    if element == _LIST_END:
                        pos += 1
                        break
                    if element != _LIST_ITEM:
                        raise ViciProtocolError(
                            f"VICI element type {element} inside a list at byte {pos}"
                        )
                    if pos + 3 > end:
                        raise _Truncated
                    value_end = pos + 3 + (data[pos + 1] << 8 | data[pos + 2])
                    if value_end > end:
                        raise _Truncated
                    items.append(str(data[pos + 3 : value_end], "utf-8", "surrogateescape"))
                    pos = value_end
                section[key] = items
        elif element == _SECTION_END:
            if not stack:
                raise ViciProtocolError(f"VICI section end without a section at byte {pos}")
            section = stack.pop()
            pos += 1
        else:
            where = "outside a list" if element in (_LIST_ITEM, _LIST_END) else "unknown"
            raise ViciProtocolError(f"VICI element type {element} ({where}) at byte {pos}")
    if stack:
        raise ViciProtocolError(f"VICI packet ends inside {len(stack)} open section(s)")
    return root
