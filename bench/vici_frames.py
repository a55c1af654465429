#!/usr/bin/env python3
"""How long one hostile VICI frame can hold the event loop (issue 14, item 3).

Two questions, each printed as a Markdown table:

- **decode**: seconds to decode a frame of the cheapest elements at a given size, with the
  exporter's decoder (`exporter.vici.codec.decode_packet`) and with the path it replaced
  (`vici.protocol.Message.deserialize` plus a recursive bytes-to-text pass). The old
  path's worst case was a frame of unknown element type bytes, which it skipped one at a
  time; the new decoder refuses those at the first byte.
- **loop**: the longest the event loop went without running another coroutine (one that
  sleeps 1 ms in a loop) while `ViciConnection.receive` read and decoded one frame at
  `MAX_PACKET`, with the decode on the loop (as before) and in a worker thread (now, above
  `INLINE_DECODE_LIMIT`).

    python bench/vici_frames.py            # both; about 30 s with --old-size 8
    python bench/vici_frames.py --old-size 8   # also time the old path on 8 MiB (~20 s)

Exits 1 when a decode result is wrong or the threaded decode blocks the loop longer than
the inline one.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vici.protocol import Message, Packet

from exporter.vici import codec
from exporter.vici.connection import ViciConnection
from exporter.vici.errors import ViciProtocolError

KIB = 1024


def list_items(size: int) -> bytes:
    """A response of `size` bytes: one list of empty items (3 bytes each)."""
    head = bytes([Packet.CMD_RESPONSE, Message.LIST_START, 1, 0x6C])
    items = (size - len(head) - 1) // 3
    return head + bytes([Message.LIST_ITEM, 0, 0]) * items + bytes([Message.LIST_END])


def empty_sections(size: int) -> bytes:
    """`a {}` repeated: a dict made and dropped per 3 bytes."""
    return bytes([Packet.CMD_RESPONSE]) + bytes([Message.SECTION_START, 0, 2]) * ((size - 1) // 3)


def key_values(size: int) -> bytes:
    """Distinct 3-character keys with empty values, 7 bytes each."""
    body = b"".join(
        bytes([Message.KEY_VALUE, 3]) + f"{i % 4096:03x}".encode() + b"\0\0"
        for i in range((size - 1) // 7)
    )
    return bytes([Packet.CMD_RESPONSE]) + body


def unknown_elements(size: int) -> bytes:
    """Element type 0 (not VICI) throughout: the old decoder's worst case."""
    return bytes([Packet.CMD_RESPONSE]) + bytes(size - 1)


SHAPES: dict[str, Callable[[int], bytes]] = {
    "list items": list_items,
    "empty sections": empty_sections,
    "key/values": key_values,
    "unknown element types": unknown_elements,
}


def _text(value: Any) -> Any:
    # The replaced codec's second pass (recursive: 5,000 nested sections broke it).
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    return value


class _Stream(io.BytesIO):
    def has_more(self) -> bool:
        return self.tell() < len(self.getbuffer())


def old_decode(packet: bytes) -> Any:
    stream = _Stream(packet)
    stream.read(1)
    return _text(Message.deserialize(stream))


def timed(decode: Callable[[bytes], Any], packet: bytes) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        decode(packet)
        outcome = "decoded"
    except ViciProtocolError as err:
        outcome = f"refused: {err}"
    return time.perf_counter() - start, outcome


def decode_table(old_size: int) -> None:
    print(f"### decode: one frame (new limit {codec.MAX_PACKET // KIB} KiB)\n")
    print("| frame | size | decoder | seconds | outcome |")
    print("|---|---:|---|---:|---|")
    for name, make in SHAPES.items():
        packet = make(codec.MAX_PACKET)
        for label, decode in (("exporter", codec.decode_packet), ("replaced", old_decode)):
            seconds, outcome = timed(decode, packet)
            print(f"| {name} | {len(packet) // KIB} KiB | {label} | {seconds:.3f} | {outcome} |")
    if old_size:
        packet = unknown_elements(old_size * KIB * KIB)
        seconds, outcome = timed(old_decode, packet)
        print(f"| unknown element types | {old_size} MiB (old limit) | replaced | {seconds:.2f} "
              f"| {outcome} |")  # fmt: skip
    print()


class _NullWriter:
    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


async def worst_gap(packet: bytes, inline: bool) -> tuple[float, float, int]:
    """(longest loop stall, receive seconds, ticks) while receive() takes one frame."""
    reader = asyncio.StreamReader(limit=2**16)
    reader.feed_data(codec.HEADER.pack(len(packet)) + packet)
    reader.feed_eof()
    conn = ViciConnection(reader, _NullWriter())  # type: ignore[arg-type]
    gaps: list[float] = []
    last = time.perf_counter()

    async def other_work() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0.01)
    gaps.clear()
    last = time.perf_counter()
    limit = 2**32 if inline else codec.INLINE_DECODE_LIMIT
    start = time.perf_counter()
    with mock.patch("exporter.vici.connection.INLINE_DECODE_LIMIT", limit):
        frame = await conn.receive()
    took = time.perf_counter() - start
    stalled = max([*gaps, time.perf_counter() - last])
    task.cancel()
    if frame.kind != Packet.CMD_RESPONSE:
        raise SystemExit("wrong frame")
    return stalled, took, len(gaps)


def loop_table() -> bool:
    print(f"### loop: receive() of one {codec.MAX_PACKET // KIB} KiB frame\n")
    print("| frame | decode | longest loop stall (ms) | receive (ms) | other work ran |")
    print("|---|---|---:|---:|---:|")
    ok = True
    for name in ("list items", "empty sections", "key/values"):
        packet = SHAPES[name](codec.MAX_PACKET)
        results = {}
        for inline in (True, False):
            stalled, took, ticks = asyncio.run(worst_gap(packet, inline))
            results[inline] = stalled
            where = "on the loop (before)" if inline else "worker thread (now)"
            print(f"| {name} | {where} | {stalled * 1000:.1f} | {took * 1000:.1f} | {ticks} |")
        ok &= results[False] < results[True]
    print()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--old-size", type=int, default=0, help="also time the old path on N MiB (its limit: 8)"
    )
    args = parser.parse_args()
    decode_table(args.old_size)
    return 0 if loop_table() else 1


if __name__ == "__main__":
    sys.exit(main())
