"""Dropping and hashing personal labels, on families rendered from a real charon recording."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.strongswan import render
from exporter.config import StrongswanOptions
from exporter.privacy import PrivacyFilter, PrivacyOptions, pseudonym
from exporter.strongswan.fetch import assemble_snapshot
from tests.recordings import RECORDED_NOW, VICI_FIXTURES, load_answers

KEY = b"k" * 32


def families(options: PrivacyOptions) -> dict[str, list[tuple[dict[str, str], float]]]:
    snapshot = assemble_snapshot(load_answers(VICI_FIXTURES / "remote-access"), RECORDED_NOW)
    rendered = render(snapshot, StrongswanOptions(sa_details=True), SeriesLimiter(100))
    out = {}
    for family in PrivacyFilter(options).apply(rendered):
        out[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return out


def test_keep_changes_nothing() -> None:
    plain = families(PrivacyOptions())
    assert any(labels.get("user") == "nycmesh" for labels, _ in plain["strongswan_user_sessions"])


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
