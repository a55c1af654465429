"""The connection the login prober loads into its charon proposes lifetimes.

In IKEv1, charon proposes the SA lifetime from `rekey_time`; with none, Libreswan 4.10
and 5.2 delete the prober's ISAKMP SA right after Main Mode ("IKE SA expired
(--dontrekey)", seen in the vmlab guest against setup-ipsec-vpn's configuration), so every
login probe of such a server failed at the child phase.
"""

from __future__ import annotations

from exporter.probes.charon_session import connection_config
from exporter.probes.config import LoginOptions
from exporter.settings.durations import parse_duration


def test_the_probe_proposes_windows_lifetimes() -> None:
    conf = connection_config("probe", LoginOptions(), "192.0.2.1")["probe"]
    assert parse_duration(conf["rekey_time"]) == 8 * 3600
    (child,) = conf["children"].values()
    assert parse_duration(child["rekey_time"]) == 3600
