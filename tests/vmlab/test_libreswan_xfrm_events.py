#!/usr/bin/env python3
"""The kernel's XFRM notifications on a genuine Libreswan server, live and recorded.

The guest runs the production event source and ledger (`python3 -m
exporter.kernel.sa_lifecycle --record`: `XfrmEventSource`, `decode_events`, a
`ResyncingFeed` that resyncs from a real dump, `SaLedger`) in its root netns, next to
pluto (setup-ipsec-vpn's configuration), while real strongSwan clients:

1. connect (clients 1, 2, 3; each an IKEv1 Main Mode + Quick Mode, ESP in UDP);
2. rekey: client 1 starts a Quick Mode rekey (`swanctl --rekey`), then deletes the old
   CHILD SA as Windows does (strongSwan itself keeps a rekeyed IKEv1 CHILD SA until it
   expires) — make-before-break; pluto deletes the old pair on the peer's Delete
   (Libreswan's `whack --rekey-child` is IKEv2 only: on an IKEv1 instance 5.2's pluto
   fails an assertion and dies);
3. client 2 disconnects politely (L2TP StopCCN, IKE Delete);
4. client 3 is killed (SIGKILL, its kernel state flushed): pluto's DPD (3 s / 9 s) removes
   it;
5. (recording only) pluto is killed and started again: Libreswan 5.2's pluto flushes the
   SA table as it starts (XFRM_MSG_FLUSHSA) and adds and deletes a probe SA (0.0.0.0,
   SPI 0x01000000); 4.10's keeps the table.

The host then replays the raw datagrams through `decode_events` and `SaLedger` and checks
rekey vs drop, and that each deleted state's final count is at least what
`ip -s xfrm state` showed before it went.

    python3 tests/vmlab/test_libreswan_xfrm_events.py --release trixie   # re-record

writes tests/fixtures/xfrm-events/<release>/ (events.bin, events.index.json,
manifest.json; key bytes zeroed, everything else as the kernel sent it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402

from tests.kernel_events.replay import check_scenario, replay, scrub_keys  # noqa: E402

if TYPE_CHECKING:
    from .guest import Guest
else:
    try:
        from .guest import Guest
    except ImportError:  # run as a script
        from tests.vmlab.guest import Guest

pytestmark = pytest.mark.vmlab

FIXTURES = REPO / "tests/fixtures/xfrm-events"
WORK = "/tmp/xev"
# The guest's Python reads the checkout and the wheels over a read-only 9p share; a
# bytecode cache in the guest's /tmp spares the second import the compile.
ENV = f"PYTHONPATH=/mnt/src:/mnt/pydeps PYTHONPYCACHEPREFIX={WORK}/pycache"
SERVER = "192.168.77.1"


def client_ip(n: int) -> str:
    return f"192.168.77.{10 + n}"


def guest_now(g: Guest) -> float:
    return float(g.sh("date +%s.%N").strip())


def wait(what: str, pred: Any, timeout: float, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise TimeoutError(f"no {what} after {timeout:.0f} s")


# --- the guest's view, independent of the decoder under test ---------------------------

_STATE_RE = re.compile(
    r"^src (\S+) dst (\S+)\n\s+proto (\w+) spi 0x([0-9a-f]+).*?reqid (\d+)"
    r".*?lifetime current:\n\s+(\d+)\(bytes\), (\d+)\(packets\)",
    re.M | re.S,
)


def xfrm_readings(g: Guest) -> dict[str, dict[str, Any]]:
    """`ip -s xfrm state` by SPI (hex): addresses, reqid, bytes, packets."""
    text = g.sh("ip -s xfrm state")
    out = {}
    for block in re.split(r"\n(?=src )", text):
        m = _STATE_RE.search(block)
        if m:
            src, dst, proto, spi, reqid, nbytes, packets = m.groups()
            out[f"0x{int(spi, 16):08x}"] = {
                "src": src,
                "dst": dst,
                "proto": proto,
                "reqid": int(reqid),
                "bytes": int(nbytes),
                "packets": int(packets),
            }
    return out


def spis_of(readings: dict[str, dict[str, Any]], ip: str) -> list[str]:
    return sorted(s for s, r in readings.items() if ip in (r["src"], r["dst"]))


# --- the live source in the guest ------------------------------------------------------


def start_source(g: Guest, name: str = "events", args: str = "", timeout: float = 300) -> None:
    """The live ledger (`python3 -m exporter.kernel.sa_lifecycle`: the event source, a
    resync from a real dump whenever the source asks, the ledger) in the background, its
    JSON lines in WORK/<name>.jsonl, its datagrams in WORK/<name>.bin; waits for the
    subscription."""
    g.sh(f"mkdir -p {WORK}")
    g.sh(
        f"cd {WORK} && {ENV} nohup python3 -m exporter.kernel.sa_lifecycle {args} "
        f"--record {WORK}/{name}.bin > {WORK}/{name}.jsonl 2> {WORK}/{name}.err "
        f"< /dev/null & echo $! > {WORK}/{name}.pid"
    )

    def subscribed() -> bool:
        out = g.sh(f"cat {WORK}/{name}.jsonl {WORK}/{name}.err")
        if '"subscribed": false' in out or "Traceback" in out:
            raise RuntimeError(f"the event source did not subscribe:\n{out}")
        return '"subscribed": true' in out

    wait("subscription", subscribed, timeout, step=2)


def stop_source(g: Guest, name: str = "events") -> dict[str, Any]:
    g.sh(f"kill -TERM $(cat {WORK}/{name}.pid)")
    wait("source stop", lambda: '"counts"' in g.sh(f"cat {WORK}/{name}.jsonl"), 60)
    blob = base64.b64decode(g.run(f"cat {WORK}/{name}.bin", b64=True)["stdout_b64"])
    index = json.loads(g.sh(f"cat {WORK}/{name}.bin.index.json"))
    lines = [json.loads(x) for x in g.sh(f"cat {WORK}/{name}.jsonl").splitlines() if x]
    summary = next(x for x in lines if "counts" in x)
    return {
        "data": blob,
        "index": index,
        "lines": lines,
        "summary": summary,
        "ended": [x["ended"] for x in lines if "ended" in x],
    }


# --- the scenario -----------------------------------------------------------------------


def swanctl(n: int, args: str) -> str:
    return f"swanctl {args} --uri unix:///tmp/vmlab/c{n}/run/charon.vici 2>/dev/null"


def rekey(g: Guest, n: int) -> dict[str, Any]:
    """A make-before-break Quick Mode rekey started by client n, which then deletes the
    rekeyed CHILD SA (what Windows does)."""
    g.sh(swanctl(n, "--rekey --child l2tp"), timeout=90)
    listing = wait(
        "REKEYED child",
        lambda: (lambda t: t if "REKEYED" in t else None)(g.sh(swanctl(n, "--list-sas"))),
        30,
    )
    old = re.search(r"l2tp: #(\d+), reqid \d+, REKEYED", listing)
    assert old, listing
    before = xfrm_readings(g)
    g.sh(swanctl(n, f"--terminate --child-id {old.group(1)}"), timeout=60)
    return {"readings_before_delete": before, "client_listing": listing}


def scenario(g: Guest, pluto_restart: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []

    def step(what: str, **kw: Any) -> None:
        steps.append({"what": what, "at": guest_now(g), **kw})

    step("source subscribed")
    for n in (1, 2, 3):
        g.connect(n)
        step(f"client {n} connected", client=n)
    g.traffic(1, count=20, size=1000)
    first = xfrm_readings(g)
    step("readings after connects", readings=first)
    old_spis = spis_of(first, client_ip(1))
    r = rekey(g, 1)
    wait(
        "old pair deleted",
        lambda: not set(old_spis) & set(xfrm_readings(g)),
        60,
    )
    step("client 1 rekeyed (old CHILD SA deleted by the client)", client=1, old_spis=old_spis, **r)
    g.traffic(1, count=10, size=500)
    before = xfrm_readings(g)
    step("readings before the disconnect", readings=before)
    g.disconnect(2)
    wait("client 2's SAs gone", lambda: not spis_of(xfrm_readings(g), client_ip(2)), 60)
    step("client 2 disconnected politely", client=2, spis=spis_of(before, client_ip(2)))
    before = xfrm_readings(g)
    g.kill(3)
    step("client 3 killed", client=3, readings=before)
    wait("client 3's SAs gone (DPD)", lambda: not spis_of(xfrm_readings(g), client_ip(3)), 90)
    step("client 3 removed by DPD", client=3, spis=spis_of(before, client_ip(3)))
    expect = {"added": 4, "ups": 3, "rekeys": 1, "drops": 2}
    if pluto_restart:
        before = xfrm_readings(g)
        g.sh("kill -KILL $(pidof pluto)")
        step("pluto killed (SIGKILL)", readings=before)
        g.sh(
            "nohup /usr/libexec/ipsec/pluto --config /etc/ipsec.conf --nofork "
            ">> /tmp/vmlab/server/pluto.out 2>&1 < /dev/null &"
        )
        wait("pluto's connections", lambda: '"l2tp-psk"' in g.sh("ipsec status || true"), 90)
        # Libreswan 5's pluto flushes the SA table as it starts; 4.10's does not.
        try:
            wait("an empty SA table", lambda: not xfrm_readings(g), 20)
            flushed = True
        except TimeoutError:
            flushed = False
        step(
            "pluto started again"
            + (" (it flushed the SA table)" if flushed else " (the SA table was kept)"),
            spis=sorted(before),
            flushed=flushed,
        )
        if flushed:
            expect["drops"] += 1
    time.sleep(1)
    return {"steps": steps, "expect": expect}


# --- recordings -------------------------------------------------------------------------


def versions(g: Guest) -> dict[str, str]:
    return {
        "kernel": g.sh("uname -r").strip(),
        "libreswan": g.sh("ipsec --version").strip(),
        "strongswan_clients": g.sh(
            "dpkg-query -W -f '${Version}' strongswan-charon || true"
        ).strip(),
        "python3": g.sh("python3 --version").strip(),
    }


def write_recording(release: str, g: Guest, rec: dict[str, Any], run: dict[str, Any]) -> Path:
    out = FIXTURES / release
    out.mkdir(parents=True, exist_ok=True)
    data = scrub_keys(rec["data"])
    assert len(data) == len(rec["data"])
    (out / "events.bin").write_bytes(data)
    (out / "events.index.json").write_text(json.dumps(rec["index"]) + "\n")
    manifest = {
        "about": (
            "XFRM SA notifications (NETLINK_XFRM groups XFRMNLGRP_SA and XFRMNLGRP_EXPIRE) "
            "received in the vmlab guest's root netns by the production source and live "
            "ledger (python3 -m exporter.kernel.sa_lifecycle --record) next to a genuine "
            "Libreswan "
            "server, recorded by tests/vmlab/test_libreswan_xfrm_events.py. events.bin: the "
            "datagrams as received, back to back, with the key bytes of XFRMA_ALG_* zeroed "
            "(nothing else changed); events.index.json: [offset, length, received_at] per "
            "datagram. steps: what the host did, with the guest's clock and "
            "`ip -s xfrm state` readings (by SPI) taken before each end."
        ),
        "release": release,
        "versions": versions(g),
        **run,
        "guest_decoded_events": [x.get("event") for x in rec["lines"] if "event" in x],
        "guest_source_stats": rec["summary"]["stats"],
        "guest_ledger_counts": rec["summary"]["counts"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def write_expiry(out: Path, rec: dict[str, Any]) -> None:
    """The lifetime expiry phase: expiry.bin, expiry.index.json, expiry.json."""
    (out / "expiry.bin").write_bytes(scrub_keys(rec["data"]))
    (out / "expiry.index.json").write_text(json.dumps(rec["index"]) + "\n")
    about = {
        "about": (
            "In a netns of the guest (no IKE daemon there), a pair of ESP states added with "
            "`ip xfrm state add ... reqid 8 ... limit time-soft 1 limit time-hard 3` "
            "(10.9.0.1 -> 10.9.2.1 SPI 0x2001, back SPI 0x2002); the kernel's notifications "
            "until both hard expiries, as the live ledger received them (key bytes zeroed)."
        ),
        "guest_decoded_events": [x.get("event") for x in rec["lines"] if "event" in x],
        "guest_ledger_counts": rec["summary"]["counts"],
        "guest_ended": rec["ended"],
    }
    (out / "expiry.json").write_text(json.dumps(about, indent=1) + "\n")


# --- the test ---------------------------------------------------------------------------


def _releases() -> list[str]:
    from tests.vmlab.conftest import LIBRESWAN_RELEASES

    return list(LIBRESWAN_RELEASES)


@pytest.fixture(scope="module", params=_releases())
def lsguest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    from tests.vmlab.conftest import vmlab_skip_reason

    release = str(request.param)
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    log_dir = None
    if os.environ.get("VMLAB_LOG_DIR"):
        log_dir = Path(os.environ["VMLAB_LOG_DIR"]) / f"xfrm-events-{release}"
        log_dir.mkdir(parents=True, exist_ok=True)
    with Guest(clients=3, release=release, flavour="libreswan", log_dir=log_dir) as g:
        yield g
        if request.session.testsfailed:
            sys.stderr.write(f"\n--- serial log (tail) ---\n{g.serial_tail(40)}\n")


def test_rekey_and_drops_told_apart_on_libreswan(lsguest: Guest) -> None:
    """Genuine pluto, real clients, the live source and ledger in the guest: one
    make-before-break rekey, one polite disconnect and one DPD drop, told apart exactly
    once each from the kernel's own notifications; each deleted state's final count is at
    least what `ip -s xfrm state` showed before it went. The host's replay of the bytes
    the guest received agrees with the guest's live ledger."""
    g = lsguest
    start_source(g)
    run = scenario(g, pluto_restart=False)
    rec = stop_source(g)
    summary = rec["summary"]
    stats = summary["stats"]
    assert stats["undecodable"] == 0 and stats["overflows"] == 0 and stats["failures"] == 0
    assert summary["resyncs"] == 1  # the start's, from a real dump
    guest = summary["counts"]
    assert {k: guest[k] for k in run["expect"]} == run["expect"], guest
    ledger, decoded = replay(rec["data"], rec["index"])
    # The guest's live source and the host's replay of its bytes agree.
    guest_events = [x["event"] for x in rec["lines"] if "event" in x]
    assert guest_events == ["ResyncNeeded", *(type(e).__name__ for e in decoded)]
    ended = check_scenario(ledger, run)
    assert sorted((e["how"], tuple(s["spi"] for s in e["states"])) for e in rec["ended"]) == sorted(
        (e.how, e.spis) for e in ended
    )
    # Client 1's new pair is the one left, in both.
    (live,) = ledger.live()
    assert [sa["serial"] for sa in summary["live"]] == [live.serial]
    assert {s.src for s in live.states} == {SERVER, client_ip(1)} and len(live.states) == 2


KEY = "0x" + "11" * 16


def add_expiring_pair(g: Guest, netns: str) -> None:
    """Lifetimes, which neither pluto nor charon leave to the kernel: a pair (reqid 8,
    SPIs 0x2001/0x2002) with a 1 s soft and 3 s hard limit. The kernel announces both;
    after the hard one it deletes the states with no DELSA."""
    for spi, src, dst in ((0x2001, "10.9.0.1", "10.9.2.1"), (0x2002, "10.9.2.1", "10.9.0.1")):
        g.sh(
            f"ip -n {netns} xfrm state add src {src} dst {dst} proto esp spi {spi} reqid 8 "
            f"mode transport enc 'cbc(aes)' {KEY} limit time-soft 1 limit time-hard 3"
        )


def wait_hard_expiries(g: Guest, name: str) -> None:
    wait(
        "two hard expiries",
        lambda: g.sh(f"cat {WORK}/{name}.jsonl").count('"hard": true') == 2,
        60,
    )


def test_overflow_on_the_real_kernel_asks_for_a_resync(lsguest: Guest) -> None:
    """ENOBUFS for real: the live ledger with a tiny receive buffer, in a netns of ours,
    is stopped (SIGSTOP) while 64 SAs are added there with `ip xfrm state add`. Running
    again it delivers what was queued, counts the overflow, asks for a resync and gets it
    from a real dump: the ledger ends with all 64, each counted once. Then real lifetime
    expiries: soft ones counted, the hard one ends the pair once (no DELSA comes)."""
    g = lsguest
    g.sh("ip netns add xev 2>/dev/null || true")
    start_source(g, "overflow", "--netns xev --rcvbuf 4096")
    pid = g.sh(f"cat {WORK}/overflow.pid").strip()
    batch = "".join(
        f"xfrm state add src 10.9.0.1 dst 10.9.1.{i} proto esp spi {0x1000 + i} reqid 7 "
        f"mode transport enc 'cbc(aes)' {KEY}\n"
        for i in range(1, 65)
    )
    g.sh(f"kill -STOP {pid}")
    try:
        r = g.post(
            "/run",
            {
                "argv": ["ip", "-n", "xev", "-batch", "-"],
                "stdin_b64": base64.b64encode(batch.encode()).decode(),
                "timeout": 60,
            },
        )
        assert r["rc"] == 0, r
    finally:
        g.sh(f"kill -CONT {pid}")
    wait(
        "the overflow marker",
        lambda: '"reason": "overflow"' in g.sh(f"cat {WORK}/overflow.jsonl"),
        30,
    )
    add_expiring_pair(g, "xev")
    wait_hard_expiries(g, "overflow")
    time.sleep(1)
    rec = stop_source(g, "overflow")
    g.sh("ip netns del xev")
    summary = rec["summary"]
    stats = summary["stats"]
    assert stats["overflows"] >= 1 and stats["failures"] == 0 and stats["subscriptions"] == 1
    events = [x for x in rec["lines"] if "event" in x]
    marker = next(i for i, e in enumerate(events) if e.get("reason") == "overflow")
    adds = sum(1 for e in events[:marker] if e["event"] == "SaAdded")
    assert 0 < adds < 64  # some were queued, the rest lost
    reasons = [e["reason"] for e in events if e["event"] == "ResyncNeeded"]
    assert reasons == ["start", "overflow"]
    assert summary["resyncs"] == 2
    counts = summary["counts"]
    assert counts["added"] == 65 and len(summary["live"]) == 64
    # The expired pair: one IPsec SA, ended once, by its hard expiry.
    assert (counts["soft_expires"], counts["drops"], counts["unknown_ends"]) == (2, 1, 0)
    (ended,) = rec["ended"]
    assert (ended["how"], ended["cause"]) == ("drop", "expire")
    assert sorted(s["spi"] for s in ended["states"]) == [0x2001, 0x2002]
    assert not [e for e in events if e["event"] == "SaDeleted"]


def main() -> int:
    ap = argparse.ArgumentParser(description="Re-record tests/fixtures/xfrm-events/<release>/")
    ap.add_argument("--release", default="trixie")
    ap.add_argument("--no-pluto-restart", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    with Guest(clients=3, release=args.release, flavour="libreswan") as g:
        print(f"booted in {g.boot_seconds} s", flush=True)
        start_source(g)
        print(f"source subscribed at {time.monotonic() - t0:.0f} s", flush=True)
        run = scenario(g, pluto_restart=not args.no_pluto_restart)
        rec = stop_source(g)
        out = write_recording(args.release, g, rec, run)
        g.sh("ip netns add xexp")
        start_source(g, "expiry", "--netns xexp")
        add_expiring_pair(g, "xexp")
        wait_hard_expiries(g, "expiry")
        time.sleep(1)
        write_expiry(out, stop_source(g, "expiry"))
    ledger, _ = replay(rec["data"], rec["index"])
    print(f"wrote {out} in {time.monotonic() - t0:.0f} s; ledger: {ledger.counts()}")
    check_scenario(ledger, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
