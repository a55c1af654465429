"""nlraw.attributes: a message laid out like one walked before is cut without a walk, and
the answer is always the walk's (issue 19: the kernel collectors at scale)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest

from exporter.kernel import nlraw

_RTA = struct.Struct("=HH")


def walk(
    buf: bytes, start: int, end: int | None, wanted: frozenset[int] | None
) -> dict[int, bytes]:
    """The plain walk `attributes` must always agree with."""
    out: dict[int, bytes] = {}
    end = len(buf) if end is None or end > len(buf) else end
    missing = len(wanted) if wanted is not None else -1
    while start + 4 <= end:
        length, kind = _RTA.unpack_from(buf, start)
        stop = start + length
        if length < 4 or stop > end:
            break
        kind &= nlraw.NLA_TYPE_MASK
        if kind not in out and (wanted is None or kind in wanted):
            out[kind] = buf[start + 4 : stop]
            missing -= 1
            if not missing:
                break
        start = (stop + 3) & ~3
    return out


def attr(kind: int, payload: bytes) -> bytes:
    raw = _RTA.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


@pytest.fixture(autouse=True)
def _no_layouts() -> Iterator[None]:
    nlraw._LAYOUTS.clear()
    yield
    nlraw._LAYOUTS.clear()


def test_same_layout_is_cut_where_the_walk_cut_the_first() -> None:
    wanted = frozenset({3, 23})
    first = attr(3, b"ppp1\0") + attr(4, b"\1\2\3\4") + attr(23, b"A" * 8) + attr(18, b"kind")
    second = attr(3, b"ppp2\0") + attr(4, b"\5\6\7\0") + attr(23, b"B" * 8) + attr(18, b"x")
    assert nlraw.attributes(first, 0, None, wanted) == {3: b"ppp1\0", 23: b"A" * 8}
    assert len(nlraw._LAYOUTS) == 1
    # Same length, same headers up to where the walk stopped: no walk, the same cuts.
    assert nlraw.attributes(second, 0, None, wanted) == {3: b"ppp2\0", 23: b"B" * 8}
    assert sum(len(v) for v in nlraw._LAYOUTS.values()) == 1


def test_same_size_other_headers_walks_and_learns_a_second_layout() -> None:
    # ppp9 and ppp10 pad to the same size; their name attributes' lengths differ.
    nine = attr(3, b"ppp9\0") + attr(23, b"A" * 8)
    ten = attr(3, b"ppp10\0") + attr(23, b"B" * 8)
    assert len(nine) == len(ten)
    wanted = frozenset({3, 23})
    assert nlraw.attributes(nine, 0, None, wanted) == {3: b"ppp9\0", 23: b"A" * 8}
    assert nlraw.attributes(ten, 0, None, wanted) == {3: b"ppp10\0", 23: b"B" * 8}
    assert len(nlraw._LAYOUTS[(wanted, len(nine))]) == 2
    assert nlraw.attributes(nine, 0, None, wanted) == {3: b"ppp9\0", 23: b"A" * 8}


def test_random_messages_always_read_as_the_walk_reads_them() -> None:
    """Shapes, truncations and corrupted headers at random, each read several times (the
    first walks, the others may take a layout): never another answer than the walk's."""
    rng = random.Random(19)

    def message() -> bytes:
        out = bytearray()
        for _ in range(rng.randint(0, 6)):
            length = rng.choice([4, 5, 8, 12])
            out += _RTA.pack(length, rng.choice([1, 2, 3, 4, 0x8003]))
            out += bytes(rng.randrange(256) for _ in range(length - 4))
            out += b"\0" * (-len(out) % 4)
        if out and rng.random() < 0.3:
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)

    messages = [message() for _ in range(1500)]
    for wanted in (None, frozenset({1, 3}), frozenset({2})):
        for _ in range(3):
            for msg in messages:
                for start, end in ((0, None), (0, len(msg) - 1), (4, None)):
                    assert nlraw.attributes(msg, start, end, wanted) == walk(
                        msg, start, end, wanted
                    ), (msg.hex(), start, end, wanted)
    assert 0 < len(nlraw._LAYOUTS) <= nlraw._MAX_LAYOUTS


def test_layouts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlraw, "_MAX_LAYOUTS", 8)
    for size in range(1, 40):
        nlraw.attributes(attr(1, b"x" * size), 0)
    assert 0 < len(nlraw._LAYOUTS) <= 8
