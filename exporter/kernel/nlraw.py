"""Dump answers read as bytes: what the kernel collectors decode at every scrape.

pyroute2 decodes every attribute of every message into nested objects; at a thousand
clients that was most of a scrape (bench/kernel_scale.py: seconds per scrape). The dump
sockets here use `RawMarshal`, which hands the dumps' messages over as their bytes
(`RawMessage`), and the decoders read the few fields they need with `struct`. pyroute2
still opens the sockets (in a named namespace too), sends the requests, matches the
answers and turns NLMSG_ERROR into `NetlinkError`.

The decoders also accept pyroute2's own decoded messages (the recordings' tests parse
with pyroute2's marshals): `message_bytes` takes the bytes such a message was decoded
from. Every read is bounds-checked: an attribute cut short or of the wrong size reads as
missing, a message too short for its fixed header is skipped.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink.nlsocket import Marshal

NLMSG_LEN = 16  # struct nlmsghdr: length, type, flags, seq, pid
_HEADER = struct.Struct("=IHHI")
_RTA = struct.Struct("=HH")  # struct nlattr / rtattr: length, type
#: NLA_F_NESTED and NLA_F_NET_BYTEORDER are flags, not part of the type.
NLA_TYPE_MASK = 0x3FFF
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


class RawMessage(dict[str, Any]):
    """Messages of one type of a dump answer, as they came in one datagram: the "header"
    pyroute2's socket code reads (type, flags, sequence number of the first) and their
    bytes (netlink headers included) in `raw`; `each_message` walks them."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes, header: dict[str, Any]) -> None:
        super().__init__(header=header)
        self.raw = raw


class RawMarshal(Marshal):  # type: ignore[misc]
    """pyroute2's marshal, except that messages of `raw_types` are not decoded: each run
    of them in a datagram becomes one `RawMessage`. Errors, NLMSG_DONE and every other
    type go through pyroute2 as before.

    One object per run instead of one per message matters: pyroute2's socket code costs
    tens of microseconds per message it hands on, more than decoding one here. (No
    per-message callbacks: the dumps here register none.)
    """

    raw_types: frozenset[int] = frozenset()

    def parse(
        self,
        data: bytes,
        seq: int | None = None,
        callback: Any = None,
        skip_alien_seq: bool = False,
    ) -> Iterator[Any]:
        offset = 0
        run_start = run_type = run_flags = run_seq = 0
        in_run = False
        end = len(data)
        while offset <= end - NLMSG_LEN:
            length, key, flags, sequence = _HEADER.unpack_from(data, offset)
            if not NLMSG_LEN <= length <= end - offset:
                break
            if in_run and key != run_type:
                yield _run(data, run_start, offset, run_type, run_flags, run_seq)
                in_run = False
            if key in self.raw_types:
                if not in_run:
                    run_start, run_type, run_flags, run_seq = offset, key, flags, sequence
                    in_run = True
            else:
                yield from super().parse(data[offset : offset + length], seq, callback)
            offset += length
        if in_run:
            yield _run(data, run_start, offset, run_type, run_flags, run_seq)


def _run(data: bytes, start: int, end: int, kind: int, flags: int, seq: int) -> RawMessage:
    header = {
        "length": end - start,
        "type": kind,
        "flags": flags,
        "sequence_number": seq,
        "error": None,
    }
    return RawMessage(bytes(data[start:end]), header)


def message_bytes(msg: Any) -> bytes:
    """The bytes a pyroute2 message was decoded from (b"" when there are none); a
    `RawMessage`'s bytes."""
    if isinstance(msg, RawMessage):
        return msg.raw
    data = getattr(msg, "data", None)
    if not isinstance(data, bytes | bytearray | memoryview):
        return b""
    offset = getattr(msg, "offset", 0) or 0
    length = msg["header"].get("length") or getattr(msg, "length", 0) or 0
    return bytes(data[offset : offset + length])


def each_message(msg: Any) -> Iterator[tuple[bytes, int, int]]:
    """(buffer, start, end) of each netlink message in `msg`: the several of a
    `RawMessage`, the one of a pyroute2 message. `end` never passes the buffer's end."""
    buf = message_bytes(msg)
    offset, end = 0, len(buf)
    while offset <= end - NLMSG_LEN:
        length = _U32.unpack_from(buf, offset)[0]
        if length < NLMSG_LEN:
            return
        yield buf, offset, min(offset + length, end)
        offset += (length + 3) & ~3


class _Layout:
    """Where a walk of `attributes` read its attribute headers and what it kept: a message
    whose headers at those offsets are the same (and whose length is) walks the same, so
    its attributes are cut at the same places without walking."""

    __slots__ = ("expected", "headers", "spans")

    def __init__(self, read: list[tuple[int, int, int]], spans: list[tuple[int, int, int]]):
        fmt, position = ["="], 0
        for offset, _length, _kind in read:
            fmt.append(f"{offset - position}xHH")
            position = offset + 4
        self.headers = struct.Struct("".join(fmt))
        self.expected = tuple(v for _offset, length, kind in read for v in (length, kind))
        #: (type, payload start, payload end), offsets from the walk's start.
        self.spans = tuple(spans)


#: (wanted, bytes walked) → the layouts of the first such walks (a few: names of
#: different lengths padded to the same size, e.g. ppp9 and ppp10); the kernel's dump
#: messages of one kind mostly share them, scrape after scrape. Bounded: a kernel that
#: sends ever new shapes only costs walks.
_LAYOUTS: dict[tuple[frozenset[int] | None, int], list[_Layout]] = {}
_MAX_LAYOUTS = 1024
_LAYOUTS_PER_SIZE = 8


def attributes(
    buf: bytes, start: int, end: int | None = None, wanted: frozenset[int] | None = None
) -> dict[int, bytes]:
    """Attribute type (flags cleared) → payload, for the attributes from `start` to `end`
    (the buffer's end by default), only those of the `wanted` types if given (the walk
    stops when it has them all); the first of a repeated type wins, as pyroute2's
    `get_attr`. Walking stops at an attribute that does not fit.

    A message laid out like one walked before (same length, same attribute headers where
    that walk read them) is cut where that one was, checked by one `struct` read of
    those headers: most of a dump's messages, at a third of a walk's cost or less."""
    end = len(buf) if end is None or end > len(buf) else end
    if end - start < 4:
        return {}  # no attribute header fits
    key = (wanted, end - start)
    layouts = _LAYOUTS.get(key)
    if layouts is not None:
        for layout in layouts:
            if layout.headers.unpack_from(buf, start) == layout.expected:
                return {kind: buf[start + a : start + b] for kind, a, b in layout.spans}
    out: dict[int, bytes] = {}
    read: list[tuple[int, int, int]] = []
    spans: list[tuple[int, int, int]] = []
    first = start
    unpack = _RTA.unpack_from
    missing = len(wanted) if wanted is not None else -1
    while start + 4 <= end:
        length, raw_kind = unpack(buf, start)
        read.append((start - first, length, raw_kind))
        stop = start + length
        if length < 4 or stop > end:
            break
        kind = raw_kind & NLA_TYPE_MASK
        if kind not in out and (wanted is None or kind in wanted):
            out[kind] = buf[start + 4 : stop]
            spans.append((kind, start + 4 - first, stop - first))
            missing -= 1
            if not missing:
                break
        start = (stop + 3) & ~3
    if layouts is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = [_Layout(read, spans)]
    elif len(layouts) < _LAYOUTS_PER_SIZE:
        layouts.append(_Layout(read, spans))
    return out


def text(value: bytes | None) -> str:
    """A NUL-terminated string attribute; "" when missing or not UTF-8."""
    if not value:
        return ""
    try:
        return value.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return ""


def u8(value: bytes | None) -> int:
    return value[0] if value else 0


def u16(value: bytes | None) -> int:
    return int(_U16.unpack_from(value)[0]) if value is not None and len(value) >= 2 else 0


def u32(value: bytes | None) -> int:
    return int(_U32.unpack_from(value)[0]) if value is not None and len(value) >= 4 else 0


def u64(value: bytes | None) -> int:
    return int(_U64.unpack_from(value)[0]) if value is not None and len(value) >= 8 else 0


def ip_text(value: bytes | None) -> str:
    """An IPv4 (4 bytes) or IPv6 (16 bytes) address attribute as text; "" otherwise."""
    if value is None:
        return ""
    if len(value) == 4:
        return socket.inet_ntop(socket.AF_INET, value)
    if len(value) == 16:
        return socket.inet_ntop(socket.AF_INET6, value)
    return ""
