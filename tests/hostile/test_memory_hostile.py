"""A VICI peer floods the real exporter with `ike-updown` ups of new SAs (issue 14, item 6).

Before the cap, 130,000 announced SAs grew the exporter from 53 to 319 MB in a minute, and
it stayed at 254 MB after a listing removed them. Now it tracks at most
`--collector.strongswan.max-sas` IKE SAs, counts the rest in
`strongswan_sas_untracked_total`, and its memory stays bounded by the cap, during the
flood and after a listing removed the SAs.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import ExporterProcess, Scrape, StartExporter

from .fake_charon import FakeCharon

FLOOD = 20_000
CAP = 1_000
#: What the exporter may grow by: the cap's 1,000 SAs take ~5 MB (4.7 KB each, measured at
#: 5,000 real SAs); the flood's 20,000 untracked ones grew it by ~65 MB before the cap.
GROWTH_MB = 20.0


def rss_mb(exp: ExporterProcess) -> float:
    for line in Path(f"/proc/{exp.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def ike_sas(scrape: Scrape) -> float:
    return sum(float(s.value) for s in scrape.samples("strongswan_ike_sas"))


def test_a_flood_of_new_sas_is_counted_and_memory_stays_bounded(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    peer = FakeCharon(tmp_path / "charon.vici", flood=FLOOD, held=True)
    try:
        exp = start_exporter(
            peer.uri,
            "--collector.strongswan.max-sas", str(CAP),
            "--collector.strongswan.reauth-grace", "0",
            # No listing during the flood (auto would list every 10 s here, and this fake
            # lists no SA: each listing would make room for another 1,000).
            "--collector.strongswan.sa-refresh-interval", "1h",
        )  # fmt: skip
        exp.wait_for(lambda s: s.value("strongswan_event_stream_up") == 1)
        for _ in range(3):  # the first scrapes allocate what every scrape needs
            exp.scrape()
        before = rss_mb(exp)

        peer.release()
        peak = before
        deadline = time.monotonic() + 180
        while not peer.flood_done.is_set() and time.monotonic() < deadline:
            peak = max(peak, rss_mb(exp))
            time.sleep(0.5)
        assert peer.flood_done.is_set(), f"flood not read in time: {peer.flooded} SAs sent"
        flooded = exp.wait_for(
            lambda s: s.value("strongswan_event_stream_events_total") == 2 * FLOOD, timeout=120
        )
        peak = max(peak, rss_mb(exp))
        assert flooded.value("strongswan_sas_untracked_total") == FLOOD - CAP
        assert ike_sas(flooded) == CAP
        assert flooded.value("strongswan_ike_sa_events_total", conn="ikev2-psk", event="up") == CAP
        assert peak - before < GROWTH_MB, f"RSS {before:.1f} -> {peak:.1f} MB during the flood"

        # The stream drops; the exporter reconnects and lists: charon has no SA at all.
        peer.drop_events()
        listed = exp.wait_for(
            lambda s: (
                s.value("strongswan_event_stream_reconnects_total") == 1
                and ike_sas(s) == 0
                and s.value("strongswan_ike_sa_events_total", conn="ikev2-psk", event="down") == CAP
            ),
            timeout=60,
        )
        assert listed.value("strongswan_sas_untracked_total") == FLOOD - CAP
        after = rss_mb(exp)
        assert after - before < GROWTH_MB, f"RSS {before:.1f} -> {after:.1f} MB after the listing"
    finally:
        peer.close()
