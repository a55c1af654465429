"""The privacy settings apply to the Libreswan families as to strongSwan's: every label that
names a person or an address, rendered from real pluto's recorded answers (Libreswan 4.10
and 5.2 in the vmlab guest), is hashed or dropped as configured."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.core import Metric

from exporter.collectors.libreswan import LibreswanCollector
from exporter.collectors.limits import SeriesLimiter
from exporter.libreswan.model import PlutoSnapshot
from exporter.libreswan.options import LibreswanOptions
from exporter.libreswan.view import PlutoView
from exporter.privacy import LABEL_KINDS, PrivacyFilter, PrivacyOptions, pseudonym
from tests.unit.test_libreswan_collector import RELEASES, recorded

KEY = b"k" * 32


def rendered(release: str) -> list[Metric]:
    snapshot = recorded(release)

    async def ask() -> PlutoSnapshot:
        return snapshot

    collector = LibreswanCollector(
        PlutoView(ask), LibreswanOptions(sa_details=True), SeriesLimiter(1000)
    )
    collection = asyncio.run(collector.collect())
    assert collection.success, collection.error
    return list(collection.families)


def personal_values(families: list[Metric], kind: str) -> dict[str, set[str]]:
    """Family name -> the values of its labels of `kind` (users or addresses)."""
    out: dict[str, set[str]] = {}
    for family in families:
        for s in family.samples:
            for name, value in s.labels.items():
                if name in LABEL_KINDS[kind]:
                    out.setdefault(family.name, set()).add(value)
    return out


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_users_hashed_and_addresses_dropped_in_every_libreswan_family(release: str) -> None:
    plain = rendered(release)
    users, addresses = personal_values(plain, "users"), personal_values(plain, "addresses")
    # Not vacuous: the recordings name users and addresses in several families.
    assert len(users) >= 2 and len(addresses) >= 1, (users, addresses)
    options = PrivacyOptions(defaults={"users": "hash", "addresses": "drop"}, hash_key=KEY)
    private = PrivacyFilter(options).apply(rendered(release))
    assert not personal_values(private, "addresses"), "an address label survived"
    hashed = personal_values(private, "users")
    assert set(hashed) == set(users)
    for name, values in users.items():
        assert hashed[name] == {pseudonym(KEY, v) for v in values}, name
