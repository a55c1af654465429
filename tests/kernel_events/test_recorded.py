"""The production decoder and ledger on XFRM notifications recorded from the REAL kernel.

Every byte of tests/fixtures/xfrm-events/<release>/events.bin was sent by Debian's kernel
in the vmlab guest to the production event source subscribed next to a genuine Libreswan
server (tests/vmlab/test_libreswan_xfrm_events.py recorded it; only the key bytes of
XFRMA_ALG_* were zeroed). The expectations come from what the host did and from
`ip -s xfrm state` readings in the manifest, never from the decoder: 3 clients connected,
one make-before-break rekey, one polite disconnect, one client dropped by DPD, then pluto
killed and started again (Libreswan 5.2's start flushes the SA table, 4.10's does not).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Any

import pytest

from exporter.kernel.sa_lifecycle import SaLedger, Traffic
from exporter.kernel.xfrm_events import (
    SaAdded,
    SaDeleted,
    SaExpired,
    SasFlushed,
    decode_events,
)
from tests.kernel_events.replay import (
    FIXTURES,
    check_scenario,
    decode_all,
    load,
    replay,
    scrub_keys,
)

RELEASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "manifest.json").exists())


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def flushed(manifest: dict[str, Any]) -> bool:
    return any(s.get("flushed") for s in manifest["steps"])


def test_recordings_exist() -> None:
    assert "trixie" in RELEASES


def test_ledger_counts_the_recorded_scenario_exactly(release: str) -> None:
    """4 IPsec SAs added (3 clients + 1 rekey), 1 rekey, 1 polite drop, 1 DPD drop (and 1
    drop by pluto's flush where its start flushes); each deleted state's final count at
    least `ip -s xfrm state`'s last reading of it; nothing unknown; the totals are the
    finals handed over plus what is still live."""
    data, index, manifest = load(release)
    ledger = SaLedger()
    ledger.resync([], at=index[0][2])
    last = Traffic()
    for event in decode_all(data, index):
        ledger.apply(event)
        now = ledger.traffic()
        assert now.bytes >= last.bytes and now.packets >= last.packets
        last = now
    ended = check_scenario(ledger, manifest)
    live = sum((sa.traffic for sa in ledger.live()), Traffic())
    assert ledger.traffic() == sum((sa.traffic for sa in ended), live)
    if flushed(manifest):
        assert not ledger.live()
    else:  # client 1's second SA outlived pluto
        assert len(ledger.live()) == 1
    # pluto's start-up probe SA (0.0.0.0, added and deleted) is ignored, not counted.
    probes = [
        e
        for e in decode_all(data, index)
        if isinstance(e, SaAdded | SaDeleted) and e.state.src == "0.0.0.0"
    ]
    assert ledger.counts().ignored == len(probes)


def test_decoded_as_the_guest_decoded_them(release: str) -> None:
    """The host's decoding of the recorded bytes gives the event sequence the live source
    printed in the guest (after its start marker)."""
    data, index, manifest = load(release)
    names = [type(e).__name__ for e in decode_all(data, index)]
    assert ["ResyncNeeded", *names] == manifest["guest_decoded_events"]
    assert manifest["guest_source_stats"]["undecodable"] == 0


def test_what_the_kernel_sends(release: str) -> None:
    """Inbound SAs first appear as XFRM_MSG_UPDSA (installed over the larval SPI state),
    outbound ones as XFRM_MSG_NEWSA; every DELSA carries XFRMA_SA with the final counts;
    pluto's start is one XFRM_MSG_FLUSHSA of every protocol; NAT-T ports decoded."""
    data, index, manifest = load(release)
    events = decode_all(data, index)
    adds = [e for e in events if isinstance(e, SaAdded) and e.state.src != "0.0.0.0"]
    server = "192.168.77.1"
    assert adds and all(e.updated == (e.state.dst == server) for e in adds)
    assert all(e.state.encap_sport == 4500 for e in adds)
    deletes = [e for e in events if isinstance(e, SaDeleted) and e.state.src != "0.0.0.0"]
    assert deletes and all(e.final for e in deletes)
    assert all(e.state.bytes > 0 and e.state.packets > 0 for e in deletes)
    flushes = [e for e in events if isinstance(e, SasFlushed)]
    if flushed(manifest):
        assert flushes == [SasFlushed(None, flushes[0].at)]
    else:
        assert flushes == []
    assert Counter(e.state.reqid for e in adds).most_common(1)[0][1] >= 2


def test_key_bytes_are_zeroed_in_the_recording(release: str) -> None:
    data, _, _ = load(release)
    assert scrub_keys(data) == data


def test_truncated_and_corrupted_datagrams_never_raise(release: str) -> None:
    """Every recorded datagram cut at every length, and with bytes flipped: the decoder
    returns what it understood and counts the rest."""
    data, index, _ = load(release)
    for offset, length, at in index[:12]:
        raw = data[int(offset) : int(offset) + int(length)]
        for cut in range(0, len(raw), 7):
            decoded = decode_events(raw[:cut], at)
            assert len(decoded.events) <= 1
        for pos in range(16, len(raw), 13):
            broken = bytearray(raw)
            broken[pos] ^= 0xFF
            decode_events(bytes(broken), at)


EXPIRY = [r for r in RELEASES if (FIXTURES / r / "expiry.bin").exists()]


@pytest.mark.parametrize("release", EXPIRY)
def test_real_lifetime_expiries(release: str) -> None:
    """Real XFRM_MSG_EXPIRE bytes (a pair added with `ip xfrm state add ... limit
    time-soft 1 limit time-hard 3` in a netns of the guest): two soft, then two hard
    expiries and no DELSA; the ledger counts 2 soft expiries and ends the pair once, as a
    drop caused by the expiry, exactly as the guest's live ledger did."""
    d = FIXTURES / release
    data = (d / "expiry.bin").read_bytes()
    index = json.loads((d / "expiry.index.json").read_text())
    about = json.loads((d / "expiry.json").read_text())
    assert scrub_keys(data) == data
    events = decode_all(data, index)
    assert ["ResyncNeeded", *(type(e).__name__ for e in events)] == about["guest_decoded_events"]
    expired = [e for e in events if isinstance(e, SaExpired)]
    assert sorted((e.hard, e.state.spi) for e in expired) == [
        (False, 0x2001),
        (False, 0x2002),
        (True, 0x2001),
        (True, 0x2002),
    ]
    assert all(e.state.reqid == 8 and e.state.mode == "transport" for e in expired)
    assert not [e for e in events if isinstance(e, SaDeleted)]
    ledger, _ = replay(data, index)
    counts = ledger.counts()
    assert (counts.added, counts.soft_expires, counts.drops, counts.rekeys) == (1, 2, 1, 0)
    (ended,) = ledger.drain()
    assert (ended.how, ended.cause) == ("drop", "expire")
    assert about["guest_ledger_counts"] == asdict(counts)
