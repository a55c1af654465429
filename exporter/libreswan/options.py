"""Settings of the Libreswan collector, declared next to the source they configure
(`exporter.config.Settings` holds them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.settings import schema
from exporter.settings.schema import setting

#: Where Debian's (and upstream's) pluto listens for whack.
DEFAULT_CTL_SOCKET = Path("/run/pluto/pluto.ctl")

_PATH = schema.text("PATH", Path)


@dataclass(frozen=True)
class LibreswanOptions:
    """The Libreswan collector: whether it runs, how it asks pluto, what it exports."""

    #: auto: on when pluto's control socket exists at start (a Libreswan server), so a
    #: strongSwan server never shows libreswan_up 0.
    mode: str = setting(
        "auto",
        flag="--collector.libreswan",
        yaml="collectors.libreswan.enabled",
        kind=schema.AUTO_SWITCH,
        example="on",
        reload="restart",
        help="Libreswan's pluto over its `ipsec` commands: auto = on when the control socket "
        "exists at start",
    )
    #: The `ipsec` program (Libreswan's; strongSwan's has the same name and other commands).
    ipsec: Path = setting(
        Path("/usr/sbin/ipsec"),
        flag="--collector.libreswan.ipsec",
        yaml="collectors.libreswan.ipsec",
        kind=_PATH,
        example="/usr/local/sbin/ipsec",
        reload="restart",
        help="Libreswan's ipsec program, run without a shell",
    )
    ctl_socket: Path = setting(
        DEFAULT_CTL_SOCKET,
        flag="--collector.libreswan.ctl-socket",
        yaml="collectors.libreswan.ctl_socket",
        kind=_PATH,
        example="/var/run/pluto/pluto.ctl",
        reload="restart",
        help="pluto's control socket (whack --ctlsocket)",
    )
    #: Deadline of one `ipsec` command; the process is killed after it.
    timeout: float = setting(
        5.0,
        flag="--collector.libreswan.timeout",
        yaml="collectors.libreswan.timeout",
        kind=schema.duration(zero_ok=False),
        example="2s",
        help="deadline of one ipsec command; over it the command is killed and the scrape "
        "says libreswan_up 0",
    )
    #: Follow the kernel's XFRM notifications: a round at every SA change.
    events: bool = setting(
        True,
        flag="--collector.libreswan.events",
        yaml="collectors.libreswan.events",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="follow the kernel's XFRM SA notifications: ask pluto a round at every SA change "
        "(SAs between scrapes are counted) and take ended SAs' final byte counts from the "
        "kernel",
    )
    sa_details: bool = setting(
        False,
        flag="--collector.libreswan.sa-details",
        yaml="collectors.libreswan.sa_details",
        kind=schema.SWITCH,
        example="true",
        help="export one series per IPsec SA (libreswan_ipsec_sa_info, its bytes)",
    )
    user_metrics: bool = setting(
        True,
        flag="--collector.libreswan.user-metrics",
        yaml="collectors.libreswan.user_metrics",
        kind=schema.SWITCH,
        example="false",
        help="export libreswan_user_sessions and libreswan_user_bytes_total per connection "
        "and user (XAuth user, else IKE identity)",
    )
