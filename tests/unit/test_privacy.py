"""Dropping and hashing personal labels, on families rendered from a real charon recording."""

from __future__ import annotations

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.join import join_sessions
from exporter.collectors.l2tp import render_l2tp
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.ppp import render_ppp
from exporter.collectors.sessions import render_sessions
from exporter.collectors.strongswan import render
from exporter.collectors.strongswan_ledger import render_ledger
from exporter.collectors.xfrm import render_xfrm
from exporter.config import StrongswanOptions
from exporter.exposition import render_openmetrics, render_text
from exporter.privacy import LABEL_KINDS, PrivacyFilter, PrivacyOptions, Treatment, pseudonym
from exporter.strongswan.fetch import assemble_snapshot
from exporter.table_family import CreatedCounterTable, TableFamily
from tests.recordings import RECORDED_NOW, VICI_FIXTURES, load_answers, scenarios
from tests.reference import privacy_per_sample
from tests.unit.test_kernel_decode import (
    VICI_GUEST,
    _hooks_from_recording,
    l2tp_fixture,
    ppp_fixture,
    xfrm_fixture,
)
from tests.unit.test_ledger import Clock, replay

KEY = b"k" * 32


def families(options: PrivacyOptions) -> dict[str, list[tuple[dict[str, str], float]]]:
    snapshot = assemble_snapshot(load_answers(VICI_FIXTURES / "remote-access"), RECORDED_NOW)
    rendered = render(snapshot, StrongswanOptions(sa_details=True), SeriesLimiter(100))
    out = {}
    for family in PrivacyFilter(options).apply(rendered):
        out[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return out


def recorded_families() -> list[Metric]:
    """Every family the collectors render from the recordings, each call built anew: the
    strongSwan ones (all VICI recordings, SA details on), the event ledger's, and the
    kernel's (ppp, L2TP, XFRM, the joined sessions). Users and addresses are in many."""
    limiter = SeriesLimiter(100_000)
    out: list[Metric] = []
    for scenario in [*scenarios(), VICI_GUEST]:
        snapshot = assemble_snapshot(load_answers(scenario), RECORDED_NOW)
        out += render(snapshot, StrongswanOptions(sa_details=True), limiter)
    for events in ("up", "reauth-then-terminate-nycmesh"):
        out += render_ledger(replay(events, Clock()), snapshot.connections, limiter, True)
    out += render_ppp(ppp_fixture(), limiter)
    out += render_l2tp(l2tp_fixture(), limiter)
    out += render_xfrm(xfrm_fixture(), limiter)
    guest = assemble_snapshot(load_answers(VICI_GUEST), RECORDED_NOW)
    joined = join_sessions(ppp_fixture(), l2tp_fixture(), _hooks_from_recording(), guest)
    out += render_sessions(joined, limiter)
    return out


def _personal(families: list[Metric]) -> dict[str, set[str]]:
    """Family name -> the user and address labels its samples carry."""
    personal = frozenset().union(*LABEL_KINDS.values())
    found: dict[str, set[str]] = {}
    for family in families:
        names = {name for s in family.samples for name in s.labels} & personal
        if names:
            found.setdefault(family.name, set()).update(names)
    return found


def test_the_recordings_are_rich_in_personal_labels() -> None:
    """What keeps the test below from passing on input with nothing to change."""
    found = _personal(recorded_families())
    assert len(found) >= 12, found
    for kind, names in LABEL_KINDS.items():
        assert len(names & set().union(*found.values())) >= 4, (kind, found)


def _keep_everything_per_family() -> PrivacyOptions:
    """Defaults that hash users and drop addresses, and every family of the input set back
    to keep: the per-family override must win in each."""
    keep_all: dict[str, Treatment] = {kind: "keep" for kind in LABEL_KINDS}
    return PrivacyOptions(
        defaults={"users": "hash", "addresses": "drop"},
        families={f.name: keep_all for f in recorded_families()},
        hash_key=KEY,
    )


KEEP = {
    "defaults": PrivacyOptions(),
    "explicit": PrivacyOptions(defaults={"users": "keep", "addresses": "keep"}),
    "active-elsewhere": PrivacyOptions(
        families={"no_such_family": {"users": "hash", "addresses": "drop"}}, hash_key=KEY
    ),
}


@pytest.mark.parametrize("case", [*KEEP, "per-family"])
def test_keep_changes_nothing(case: str) -> None:
    """Whatever `keep` is reached by, the filtered families are the unfiltered ones: same
    exposition bytes (text and OpenMetrics), same family objects' kind (the fast row path
    stays) and fields. The two sides are rendered separately, so a filter that edits the
    families it is given in place cannot hide its change."""
    options = KEEP[case] if case in KEEP else _keep_everything_per_family()
    unfiltered = recorded_families()
    filtered = PrivacyFilter(options).apply(recorded_families())
    assert render_text(filtered) == render_text(unfiltered)
    assert render_openmetrics(filtered) == render_openmetrics(unfiltered)
    assert len(filtered) == len(unfiltered)
    for got, want in zip(filtered, unfiltered, strict=True):
        assert type(got) is type(want), got.name
        assert (got.name, got.documentation, got.type, got.unit) == (
            want.name, want.documentation, want.type, want.unit,
        )  # fmt: skip
        assert got.samples == want.samples, got.name


def test_hash_replaces_users_with_a_keyed_pseudonym() -> None:
    hashed = families(PrivacyOptions(defaults={"users": "hash"}, hash_key=KEY))
    users = {labels["user"] for labels, _ in hashed["strongswan_user_sessions"]}
    assert pseudonym(KEY, "nycmesh") in users
    assert "nycmesh" not in users
    assert pseudonym(b"x" * 32, "nycmesh") != pseudonym(KEY, "nycmesh")
    info = hashed["strongswan_ike_sa_info"]
    assert all(labels["remote_id"].startswith("h:") for labels, _ in info)
    assert any(labels["remote_host"].startswith("10.99.") for labels, _ in info)  # kept


def test_drop_removes_the_label_and_merges_series() -> None:
    dropped = families(PrivacyOptions(defaults={"users": "drop", "addresses": "drop"}))
    sessions = dropped["strongswan_user_sessions"]
    assert all("user" not in labels for labels, _ in sessions)
    assert {labels["conn"]: value for labels, value in sessions} == {
        "nycmesh": 3,
        "ikev2-psk": 1,
    }
    since = dropped["strongswan_ike_sa_established_timestamp_seconds"]
    assert all("remote_host" not in labels for labels, _ in since)


def test_per_family_override() -> None:
    options = PrivacyOptions(
        defaults={"users": "drop"}, families={"strongswan_ike_sa_info": {"users": "keep"}}
    )
    result = families(options)
    assert any("user" in labels for labels, _ in result["strongswan_ike_sa_info"])
    assert all("user" not in labels for labels, _ in result["strongswan_user_sessions"])


def test_timestamps_merge_to_the_latest() -> None:
    family = GaugeMetricFamily("x_start_timestamp_seconds", "t", labels=["conn", "user"])
    family.add_metric(["a", "u1"], 10)
    family.add_metric(["a", "u2"], 20)
    (out,) = PrivacyFilter(PrivacyOptions(defaults={"users": "drop"})).apply([family])
    assert [(s.labels, s.value) for s in out.samples] == [({"conn": "a"}, 20)]


TREATMENTS: tuple[Treatment, ...] = ("keep", "drop", "hash")


def _per_family_mix() -> PrivacyOptions:
    """Every family with personal labels gets its own pair of treatments, round the nine
    pairs, over defaults that would do something else."""
    pairs = [{"users": u, "addresses": a} for u in TREATMENTS for a in TREATMENTS]
    names = sorted(_personal(recorded_families()))
    return PrivacyOptions(
        defaults={"users": "drop", "addresses": "hash"},
        families={name: pairs[i % len(pairs)] for i, name in enumerate(names)},
        hash_key=KEY,
    )


ROW_PATH_CASES: dict[str, PrivacyOptions] = {
    **{
        f"{kind}-{treatment}": PrivacyOptions(defaults={kind: treatment}, hash_key=KEY)
        for kind in LABEL_KINDS
        for treatment in TREATMENTS
    },
    **{
        f"users-{u}-addresses-{a}": PrivacyOptions(
            defaults={"users": u, "addresses": a}, hash_key=KEY
        )
        for u in ("drop", "hash")
        for a in ("drop", "hash")
    },
}


@pytest.mark.parametrize("case", [*ROW_PATH_CASES, "per-family"])
def test_row_families_stay_rows_and_match_the_per_sample_path(case: str) -> None:
    """The row path gives, byte for byte, what the per-sample path gave (tests/reference.py)
    for every recorded family, and a row family comes out a row family."""
    options = ROW_PATH_CASES[case] if case in ROW_PATH_CASES else _per_family_mix()
    unfiltered = recorded_families()
    filtered = PrivacyFilter(options).apply(recorded_families())
    reference = privacy_per_sample(options, recorded_families())
    assert render_text(filtered) == render_text(reference)
    assert render_openmetrics(filtered) == render_openmetrics(reference)
    assert len(filtered) == len(unfiltered)
    for got, was in zip(filtered, unfiltered, strict=True):
        assert type(got) is type(was), got.name
    if options.active:  # the comparison above had something to change
        assert render_text(filtered) != render_text(unfiltered)


def test_the_recordings_have_row_families_that_merge() -> None:
    """What keeps the test above from passing on input where the row path has no work:
    row families with personal labels, and dropping them merges rows."""
    rows = [f for f in recorded_families() if isinstance(f, TableFamily)]
    personal = frozenset().union(*LABEL_KINDS.values())
    assert len([f for f in rows if set(f.labels) & personal]) >= 3
    drop_all = PrivacyOptions(defaults={"users": "drop", "addresses": "drop"})
    merged = [f for f in PrivacyFilter(drop_all).apply(rows) if isinstance(f, TableFamily)]
    assert len(merged) == len(rows)
    assert sum(len(f.rows) for f in merged) < sum(len(f.rows) for f in rows)


def _logins() -> CreatedCounterTable:
    logins = CreatedCounterTable("l2tp_ipsec_user_logins", "Logins.", ["user"])
    logins.add(("alice",), 2, 1_764_745_060.0)
    logins.add(("bob",), 1, 1_764_745_070.0)
    logins.add(("carol",), 4)  # no creation time
    return logins


def test_hashed_users_keep_their_series_creation_times() -> None:
    """The users' counters (a table with `_created`): hashing the user keeps each series
    and its creation time, as the per-sample path does."""
    options = PrivacyOptions(defaults={"users": "hash"}, hash_key=KEY)
    (got,) = PrivacyFilter(options).apply([_logins()])
    (reference,) = privacy_per_sample(options, [_logins()])
    assert isinstance(got, CreatedCounterTable)
    assert render_openmetrics([got]) == render_openmetrics([reference])
    assert render_text([got]) == render_text([reference])
    assert got.created == [1_764_745_060.0, 1_764_745_070.0, None]


def test_dropped_users_merge_into_a_series_without_a_creation_time() -> None:
    """Dropping the user merges every login into one series, which has no one creation
    time (the per-sample path would add the times up)."""
    options = PrivacyOptions(defaults={"users": "drop"})
    (got,) = PrivacyFilter(options).apply([_logins()])
    assert isinstance(got, CreatedCounterTable)
    assert got.rows == [((), 7)]
    assert "_created" not in render_openmetrics([got]).decode()
