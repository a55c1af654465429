"""Replaying recorded XFRM notifications through the production decoder and ledger, and
checking a recorded scenario (tests/vmlab/test_libreswan_xfrm_events.py) against what the
host did and what `ip -s xfrm state` showed — never against the decoder's own output."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from exporter.kernel.model import XfrmState
from exporter.kernel.sa_lifecycle import EndedIpsecSa, SaLedger
from exporter.kernel.xfrm_events import XfrmEvent, decode_events

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xfrm-events"


def load(release: str) -> tuple[bytes, list[list[float]], dict[str, Any]]:
    d = FIXTURES / release
    return (
        (d / "events.bin").read_bytes(),
        json.loads((d / "events.index.json").read_text()),
        json.loads((d / "manifest.json").read_text()),
    )


def decode_all(data: bytes, index: list[list[float]]) -> list[XfrmEvent]:
    events: list[XfrmEvent] = []
    for offset, length, at in index:
        decoded = decode_events(data[int(offset) : int(offset) + int(length)], at)
        assert decoded.undecodable == 0, (offset, decoded)
        events.extend(decoded.events)
    return events


def replay(
    data: bytes, index: list[list[float]], ledger: SaLedger | None = None
) -> tuple[SaLedger, list[XfrmEvent]]:
    """The ledger after every recorded datagram, as the exporter would feed it: a resync
    on the (empty) table when the source subscribed, then each event in order."""
    ledger = ledger or SaLedger()
    ledger.resync([], at=index[0][2] if index else 0.0)
    events = decode_all(data, index)
    for event in events:
        ledger.apply(event)
    return ledger, events


def _spi(state: XfrmState) -> str:
    return f"0x{state.spi:08x}"


def _step(run: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["what"].startswith(prefix))


def _check_finals(sa: EndedIpsecSa, readings: dict[str, dict[str, Any]]) -> None:
    """Each state's final count is at least `ip -s xfrm state`'s last reading of it."""
    for state in sa.states:
        seen = readings[_spi(state)]
        assert state.bytes >= seen["bytes"], (_spi(state), state.bytes, seen)
        assert state.packets >= seen["packets"], (_spi(state), state.packets, seen)
        assert (state.src, state.dst, state.reqid) == (seen["src"], seen["dst"], seen["reqid"])


def check_scenario(ledger: SaLedger, run: dict[str, Any]) -> list[EndedIpsecSa]:
    """The scenario's ends, exactly: counts, which SA ended how, final counts."""
    expect = run["expect"]
    counts = ledger.counts()
    got = {k: getattr(counts, k) for k in expect}
    assert got == expect, (got, expect, counts)
    assert counts.unknown_ends == 0 and counts.untracked == 0, counts
    ended = ledger.drain()
    assert len(ended) == expect["rekeys"] + expect["drops"], ended
    by_spis = {frozenset(_spi(s) for s in sa.states): sa for sa in ended}
    assert all(len(sa.states) == 2 for sa in ended), ended

    rekey = _step(run, "client 1 rekeyed")
    sa = by_spis[frozenset(rekey["old_spis"])]
    assert (sa.how, sa.cause) == ("rekey", "delete")
    assert sa.replaced_by is not None
    _check_finals(sa, rekey["readings_before_delete"])

    polite = _step(run, "client 2 disconnected")
    sa = by_spis[frozenset(polite["spis"])]
    assert (sa.how, sa.cause) == ("drop", "delete")
    _check_finals(sa, _step(run, "readings before the disconnect")["readings"])

    dpd = _step(run, "client 3 removed by DPD")
    sa = by_spis[frozenset(dpd["spis"])]
    assert (sa.how, sa.cause) == ("drop", "delete")
    _check_finals(sa, _step(run, "client 3 killed")["readings"])

    causes = Counter((sa.how, sa.cause) for sa in ended)
    restart = [s for s in run["steps"] if s["what"].startswith("pluto started again")]
    if restart and restart[0]["flushed"]:
        sa = by_spis[frozenset(restart[0]["spis"])]
        assert (sa.how, sa.cause) == ("drop", "flush")
        assert causes[("drop", "flush")] == 1
    assert causes[("rekey", "delete")] == 1 and causes[("drop", "delete")] == 2
    return list(ended)


#: XFRMA_ALG_AUTH, _CRYPT, _AEAD, _AUTH_TRUNC → bytes before the key (name, lengths).
_KEY_ATTRS = {1: 68, 2: 68, 18: 72, 20: 72}
#: Message type → header length before the attributes (NEWSA, DELSA, UPDSA).
_HEADLEN = {0x10: 224, 0x11: 24, 0x1A: 224}


def scrub_keys(data: bytes) -> bytes:
    """The datagrams with every key byte zeroed (lengths and algorithm names kept)."""
    out = bytearray(data)
    off = 0
    while off + 16 <= len(out):
        length, mtype = struct.unpack_from("=IH", out, off)
        if length < 16:
            break
        headlen = _HEADLEN.get(mtype)
        if headlen is not None:
            a = off + 16 + ((headlen + 3) & ~3)
            while a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", out, a)
                if alen < 4:
                    break
                skip = _KEY_ATTRS.get(atype & 0x3FFF)
                if skip is not None and alen - 4 > skip:
                    out[a + 4 + skip : a + alen] = bytes(alen - 4 - skip)
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return bytes(out)
