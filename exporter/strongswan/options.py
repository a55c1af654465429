"""Settings of the strongSwan collector and of charon's live view, declared next to the
source they configure (`exporter.config.Settings` holds them)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.settings import schema
from exporter.settings.durations import format_duration
from exporter.settings.errors import SettingsError
from exporter.settings.schema import count, duration, setting


def _refresh_mode_changes(old: float, new: float) -> bool:
    # Background rounds on (> 0) or off (0, every scrape asks charon) is a different
    # wiring; the interval itself changes live.
    return (old > 0) != (new > 0)


@dataclass(frozen=True)
class StrongswanOptions:
    """The strongSwan collector: what it exports beyond the always-on summary, and how
    often it asks charon."""

    #: auto: on, unless the server runs Libreswan (pluto's control socket exists and
    #: charon's VICI socket does not), so a Libreswan server never shows strongswan_up 0.
    mode: str = setting(
        "auto",
        flag="--collector.strongswan",
        yaml="collectors.strongswan.enabled",
        kind=schema.AUTO_SWITCH,
        example="off",
        reload="restart",
        help="strongSwan's charon over VICI: auto = on unless pluto's control socket exists "
        "and the VICI socket does not",
    )
    sa_details: bool = setting(
        False,
        flag="--collector.strongswan.sa-details",
        yaml="collectors.strongswan.sa_details",
        kind=schema.SWITCH,
        example="true",
        help="export one series per IKE SA and CHILD SA (strongswan_ike_sa_info, …)",
    )
    user_metrics: bool = setting(
        True,
        flag="--collector.strongswan.user-metrics",
        yaml="collectors.strongswan.user_metrics",
        kind=schema.SWITCH,
        example="false",
        help="export strongswan_user_sessions{conn,user}",
    )
    #: The most series one per-SA or per-user family may have; the rest are counted.
    series_limit: int = setting(
        1000,
        flag="--collector.strongswan.series-limit",
        yaml="collectors.strongswan.series_limit",
        kind=count(minimum=0),
        example="5",
        help="most series of any per-SA, per-user or per-session family (every collector's); "
        "the rest are counted in l2tp_ipsec_exporter_series_dropped_total",
    )
    #: Subscribe to charon's events for drop counters and rekey-proof traffic totals.
    events: bool = setting(
        True,
        flag="--collector.strongswan.events",
        yaml="collectors.strongswan.events",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="subscribe to charon's events: drop/rekey counters and traffic totals that "
        "survive rekeys",
    )
    #: An IKEv2 SA the peer deleted and replaced within this many seconds was
    #: reauthenticated break-before-make, not dropped (README: What counts as a drop).
    reauth_grace: float = setting(
        10.0,
        flag="--collector.strongswan.reauth-grace",
        yaml="collectors.strongswan.reauth_grace",
        kind=duration(zero_ok=True),
        example="30s",
        reload="restart",
        help="an IKEv2 SA the peer deleted and replaced within this time was "
        "reauthenticated, not dropped, and such drops are counted this much later; IKEv1 "
        "drops and dead peers count at once",
    )
    #: Per-user traffic totals of a user with no SA are forgotten after this long.
    user_idle_seconds: float = setting(
        3600.0,
        flag="--collector.strongswan.user-idle-timeout",
        yaml="collectors.strongswan.user_idle_timeout",
        kind=duration(zero_ok=False),
        example="2h",
        help="forget the traffic totals of a user without SAs after this long",
    )
    #: Seconds between rounds of the cheap VICI questions (stats, connections, pools,
    #: certificates, counters) in the background; scrapes render what the last one (and
    #: events since) said. 0: every scrape asks charon everything itself.
    refresh_interval: float = setting(
        10.0,
        flag="--collector.strongswan.refresh-interval",
        yaml="collectors.strongswan.refresh_interval",
        kind=duration(zero_ok=True),
        example="30s",
        restart_when=_refresh_mode_changes,
        help="ask charon the cheap questions (stats, connections, pools, certificates, "
        "counters) in the background this often; scrapes never wait on charon; 0 = ask "
        "everything, list-sas included, at every scrape (switching to or from 0 needs a "
        "restart)",
    )
    #: Seconds between background `list-sas` (reconcile, CHILD SA byte counts when the
    #: kernel does not give them): the costly question at thousands of SAs; events keep
    #: SAs current in between. None (auto): `CharonView.listing_interval`'s rule.
    sa_refresh_interval: float | None = setting(
        None,
        flag="--collector.strongswan.sa-refresh-interval",
        yaml="collectors.strongswan.sa_refresh_interval",
        kind=schema.duration_or_auto(),
        example="5m",
        help="ask charon for list-sas (CHILD SA byte counts, reconciling the SA table) in "
        "the background this often; auto = 100 times what the last listing took, within "
        "sa-refresh-min and sa-refresh-max, and sa-refresh-max while the kernel gives the "
        "CHILD SA counts; events keep SAs current in between",
    )
    #: The bounds of the automatic listing interval.
    sa_refresh_min: float = setting(
        10.0,
        flag="--collector.strongswan.sa-refresh-min",
        yaml="collectors.strongswan.sa_refresh_min",
        kind=duration(zero_ok=False),
        example="30s",
        help="the shortest interval sa-refresh-interval auto picks (a small server's "
        "CHILD SA byte counts are no older than this)",
    )
    sa_refresh_max: float = setting(
        600.0,
        flag="--collector.strongswan.sa-refresh-max",
        yaml="collectors.strongswan.sa_refresh_max",
        kind=duration(zero_ok=False),
        example="30m",
        help="the longest interval sa-refresh-interval auto picks (the most a listing "
        "may be put off at thousands of SAs, or while the kernel gives the counts)",
    )
    #: The most IKE SAs the SA table and the ledger track (events can announce SAs
    #: without end); what is over it is counted, not kept.
    max_sas: int = setting(
        10000,
        flag="--collector.strongswan.max-sas",
        yaml="collectors.strongswan.max_sas",
        kind=count(minimum=1),
        example="50",
        help="most IKE SAs the SA table and the traffic ledger track; SAs announced by "
        "events beyond it are counted in strongswan_sas_untracked_total",
    )

    def __post_init__(self) -> None:
        if self.sa_refresh_min > self.sa_refresh_max:
            raise SettingsError(
                f"--collector.strongswan.sa-refresh-min {format_duration(self.sa_refresh_min)}"
                " is above --collector.strongswan.sa-refresh-max "
                f"{format_duration(self.sa_refresh_max)}"
            )
