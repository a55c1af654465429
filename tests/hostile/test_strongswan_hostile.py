"""VICI answers and events of the wrong shape, through parse.py and the ledger.

The codec hands these functions nested dicts of text, lists of text and sections, but a
charon of another version (or something posing as charon) may put any of those where
another is expected. Contract (parse.py's docstring): "missing or malformed fields
become neutral values instead of exceptions"; decoding an event, the ledger's `apply`
and `reconcile` document no exception at all. So: no exception, no hang.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.strongswan import parse
from exporter.strongswan.charon_events import EVENTS, decode_event
from exporter.strongswan.ledger import SaLedger
from exporter.strongswan.parse import (
    parse_certificates,
    parse_connections,
    parse_counters,
    parse_ike_sas,
    parse_pools,
    parse_start_time,
    parse_stats,
    parse_version,
)
from tests.recordings import load_answers, scenarios

from .helpers import HOSTILE, HOSTILE_STRUCTURED, no_hang

#: Keys charon's answers use, so random messages hit the code paths that read them.
KEYS = (
    "uniqueid", "version", "state", "remote-host", "remote-id", "remote-xauth-id",
    "remote-eap-id", "child-sas", "name", "bytes-in", "bytes-out", "packets-in",
    "packets-out", "install-time", "established", "remote-vips", "old", "new", "up",
    "workers", "active", "queues", "ikesas", "uptime", "since", "total", "idle",
    "half-open", "scheduled", "counters", "", "base", "size", "online", "offline",
    "type", "data", "flag", "has_privkey", "children", "local_addrs", "remote_addrs",
    "rw", "nycmesh", "net-1",
)  # fmt: skip

texts = st.one_of(
    st.sampled_from(["", "yes", "no", "1", "-1", "ESTABLISHED", "INSTALLED", "X509",
                     "base64:", "base64:a", "Nov 25 04:26:09 2026", "99999999999999999999"]),
    st.text(max_size=12),
)  # fmt: skip
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
#: What the codec can yield: text, lists of text, sections.
vici_shaped: st.SearchStrategy[Any] = st.recursive(
    st.one_of(texts, st.lists(texts, max_size=3)),
    lambda inner: st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
#: Anything at all, including types the codec never yields.
anything: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts, st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)  # fmt: skip
sections = st.dictionaries(keys, vici_shaped, max_size=5)


@HOSTILE_STRUCTURED
@given(sections)
def test_parse_functions_on_vici_shaped_nonsense(answer: dict[str, Any]) -> None:
    now = time.time()
    with no_hang():
        parse_version(answer)
        parse_stats(answer)
        parse_pools(answer)
        parse_counters(answer)
        parse_ike_sas([answer], now)
        parse_connections([answer])
        parse_certificates([answer])


def test_certificate_data_that_looks_recorded_but_is_not_base64() -> None:
    assert parse_certificates([{"type": "X509", "data": "base64:a"}]) == ((), 1)


@HOSTILE
@given(st.text(max_size=40))
def test_parse_start_time(text: str) -> None:
    with no_hang():
        parse_start_time(text)


@HOSTILE_STRUCTURED
@given(st.lists(st.tuples(st.sampled_from(EVENTS), sections), max_size=6))
@example([("ike-rekey", {"rw": {"old": "x", "new": ["y"]}})])
@example([("child-rekey", {"rw": {"child-sas": {"a": {"old": "x", "new": {}}}}})])
def test_ledger_events_of_the_wrong_shape(events: list[tuple[str, dict[str, Any]]]) -> None:
    ledger = SaLedger(reauth_grace=0)
    with no_hang():
        for name, message in events:
            try:
                event = decode_event(name, message, time.time())
                assert event is not None
                ledger.apply(event)
            except Exception as err:
                pytest.fail(f"decode and apply ({name!r}, {message!r}) raised {err!r}")
        ledger.traffic_totals()
        ledger.user_totals()


def test_child_rekey_with_text_child_sas() -> None:
    ledger = SaLedger()
    event = decode_event("child-rekey", {"rw": {"child-sas": "x"}}, time.time())
    assert event is not None
    ledger.apply(event)
    assert ledger.traffic_totals() == {}


@HOSTILE_STRUCTURED
@given(st.lists(st.tuples(st.sampled_from(EVENTS), anything), max_size=4))
def test_ledger_events_of_any_type(events: list[tuple[str, Any]]) -> None:
    ledger = SaLedger(reauth_grace=0)
    with no_hang():
        for name, message in events:
            if not isinstance(message, dict):
                continue  # the codec always yields a dict for an event's message
            try:
                event = decode_event(name, message, time.time())
                assert event is not None
                ledger.apply(event)
            except Exception as err:
                pytest.fail(f"decode and apply ({name!r}, {message!r}) raised {err!r}")


@HOSTILE_STRUCTURED
@given(
    st.lists(st.dictionaries(keys, vici_shaped, max_size=3), max_size=4),
    st.floats(allow_nan=False, allow_infinity=False),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2e9)),
)
def test_reconcile_with_nonsense_listings(
    listings: list[dict[str, Any]], listed_after: float, charon_start: float | None
) -> None:
    ledger = SaLedger(reauth_grace=0)
    now = time.time()
    with no_hang():
        for listing in listings:
            ledger.reconcile(parse_ike_sas([listing], now), listed_after, charon_start)
        ledger.traffic_totals()


def test_recorded_answers_still_parse() -> None:
    """Sanity: the strategies above are nonsense; the real recordings are the baseline."""
    for scenario in scenarios():
        answers = load_answers(scenario)
        assert parse_version(answers.version).daemon
    assert parse.PRIORITIES


def test_fixture_folder_exists() -> None:
    assert Path(__file__).resolve().parents[1].joinpath("fixtures", "vici").is_dir()


# ---- strongswan_up is always there (issue 14, item 4) ----------------------------------------


async def test_a_snapshot_that_cannot_be_rendered_still_says_strongswan_up_0(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from exporter.collectors.strongswan import StrongswanCollector
    from exporter.config import StrongswanOptions, ViciAddress
    from exporter.strongswan import view as view_module
    from exporter.strongswan.fetch import assemble_snapshot

    snapshot = assemble_snapshot(load_answers(scenarios()[0]), time.time())
    # A value of the wrong type past the parser (a bug, or a charon of another version).
    broken = dataclasses.replace(
        snapshot,
        stats=dataclasses.replace(snapshot.stats, workers_total=None),  # type: ignore[arg-type]
    )
    answer = [broken]

    async def fetch(*_: Any) -> Any:
        return answer[0]

    monkeypatch.setattr(view_module, "fetch_snapshot", fetch)
    address = ViciAddress("unix", path="/nonexistent/charon.vici")
    options = StrongswanOptions(refresh_interval=10, events=False)
    view = view_module.CharonView(address, 1, options)
    await view.refresh()
    collector = StrongswanCollector(view, options)
    for _ in range(3):
        collection = await collector.collect()
        up = [f for f in collection.families if f.name == "strongswan_up"]
        assert up and up[0].samples[0].value == 0
        assert not collection.success and "TypeError" in collection.error
    assert sum(r.exc_info is not None for r in caplog.records) == 1  # one traceback, not three
    answer[0] = snapshot
    await view.refresh()
    assert (await collector.collect()).success
    await view.close()


# ---- a hung charon, for real: SIGSTOP in a lab (issue 14, items 5 and 7) ---------------------


def _seconds_until(exp: Any, check: Any, deadline: float) -> tuple[float, float]:
    """Scrape every 0.1 s until `check(scrape)`; (seconds it took, slowest scrape)."""
    start = time.monotonic()
    slowest = 0.0
    while True:
        t0 = time.monotonic()
        scrape = exp.scrape()
        slowest = max(slowest, time.monotonic() - t0)
        if check(scrape):
            return time.monotonic() - start, slowest
        if time.monotonic() - start > deadline:
            pytest.fail(f"not seen within {deadline} s; last scrape:\n{scrape.text}")
        time.sleep(0.1)


@pytest.mark.lab
@pytest.mark.parametrize("vici_timeout", [2.0, 5.0])
def test_a_sigstopped_charon_is_seen_within_the_vici_timeout(
    vici_timeout: float, make_lab: Any, start_exporter: Any, record_property: Any
) -> None:
    from exporter.strongswan.event_stream import LIVENESS_INTERVAL

    lab = make_lab(["ikev2-psk"])
    exp = start_exporter(lab.server_uri, "--vici.timeout", str(vici_timeout))
    exp.wait_for(
        lambda s: s.value("strongswan_up") == 1 and s.value("strongswan_event_stream_up") == 1
    )
    pid = lab.server.pid
    # What a hung charon may take to be seen: a liveness question is due at most
    # LIVENESS_INTERVAL after it stops, and unanswered for the VICI timeout; plus slack
    # for a loaded machine. Before, event_stream_up stayed 1 for good.
    bound = vici_timeout + LIVENESS_INTERVAL + 3.0
    os.kill(pid, signal.SIGSTOP)
    try:
        stream_down, slowest_a = _seconds_until(
            exp, lambda s: s.value("strongswan_event_stream_up") == 0, bound
        )
        up_down, slowest_b = _seconds_until(exp, lambda s: s.value("strongswan_up") == 0, bound)
        # Meanwhile no scrape waited on charon (item 5): each answers from what is known.
        slowest = max(slowest_a, slowest_b)
        assert slowest < vici_timeout, f"a scrape took {slowest:.2f} s while charon hung"
        scrape = exp.scrape()
        assert (
            scrape.value("strongswan_up") == 0 and scrape.value("strongswan_event_stream_up") == 0
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    back, _ = _seconds_until(
        exp,
        lambda s: s.value("strongswan_up") == 1 and s.value("strongswan_event_stream_up") == 1,
        30.0,
    )
    numbers = {
        "event_stream_up_0_after_s": round(stream_down, 2),
        "strongswan_up_0_after_s": round(stream_down + up_down, 2),
        "slowest_scrape_s": round(slowest, 3),
        "both_1_again_after_sigcont_s": round(back, 2),
    }
    record_property("sigstop", numbers)
    print(f"vici timeout {vici_timeout:g} s: {numbers}")


async def test_a_refresh_that_breaks_unexpectedly_says_strongswan_up_0(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug past the VICI layer (here: one planted in fetch) must not leave the last good
    snapshot rendered as up, nor crash the background refresher or the scrape."""
    from exporter.collectors.strongswan import StrongswanCollector
    from exporter.config import StrongswanOptions, ViciAddress
    from exporter.strongswan import view as view_module
    from exporter.strongswan.fetch import assemble_snapshot

    async def good_fetch(*_: Any) -> Any:
        return assemble_snapshot(load_answers(scenarios()[0]), time.time())

    async def broken_fetch(*_: Any) -> Any:
        raise KeyError("uptime")

    address = ViciAddress("unix", path="/nonexistent/charon.vici")
    options = StrongswanOptions(refresh_interval=10, events=False)
    view = view_module.CharonView(address, 1, options)
    monkeypatch.setattr(view_module, "fetch_snapshot", good_fetch)
    await view.refresh()
    assert view.up
    monkeypatch.setattr(view_module, "fetch_snapshot", broken_fetch)
    for _ in range(3):
        await view.refresh()
    assert not view.up and "KeyError" in view.error
    collection = await StrongswanCollector(view, options).collect()
    up = [f for f in collection.families if f.name == "strongswan_up"]
    assert up[0].samples[0].value == 0 and not collection.success
    assert sum(r.exc_info is not None for r in caplog.records) == 1
    await view.close()
