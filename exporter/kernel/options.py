"""Settings of the kernel collectors (ppp, l2tp, xfrm, sessions), declared next to them
(the collectors are built from them in exporter.collectors.kernel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.kernel.hook import DEFAULT_STATE_DIR
from exporter.settings import schema
from exporter.settings.schema import setting

_PATH = schema.text("PATH", Path)
_GLOB = schema.text("GLOB", str)
_NETNS = schema.optional_text("NAME")


@dataclass(frozen=True)
class KernelOptions:
    ppp: bool = setting(
        True,
        flag="--collector.ppp",
        yaml="collectors.ppp.enabled",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="ppp interfaces: traffic, addresses, up since",
    )
    l2tp: bool = setting(
        True,
        flag="--collector.l2tp",
        yaml="collectors.l2tp.enabled",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="kernel L2TP tunnels and sessions",
    )
    xfrm: bool = setting(
        True,
        flag="--collector.xfrm",
        yaml="collectors.xfrm.enabled",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="kernel IPsec SAs and policies, /proc/net/xfrm_stat",
    )
    sessions: bool = setting(
        True,
        flag="--collector.sessions",
        yaml="collectors.sessions.enabled",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="one series per client joining ppp, L2TP, IKE SA and user",
    )
    #: fnmatch pattern of the ppp interfaces that carry L2TP sessions.
    ppp_interfaces: str = setting(
        "ppp*",
        flag="--collector.ppp.interfaces",
        yaml="collectors.ppp.interfaces",
        kind=_GLOB,
        example="l2tp*",
        reload="restart",
        help="ppp interfaces to export, a shell pattern",
    )
    #: Where the pppd hook (contrib/ppp/) writes one record per interface.
    state_dir: Path = setting(
        DEFAULT_STATE_DIR,
        flag="--collector.sessions.state-dir",
        yaml="collectors.sessions.state_dir",
        kind=_PATH,
        example="/run/vpn-sessions",
        reload="restart",
        help="where the shipped pppd hook records each interface's PPP user",
    )
    #: A named network namespace (`ip netns`) to read instead of our own; None: ours.
    netns: str | None = setting(
        None,
        flag="--collector.kernel.netns",
        yaml="collectors.kernel.netns",
        kind=_NETNS,
        example="vpn",
        reload="restart",
        help="read ppp, L2TP and XFRM state from this named network namespace (`ip netns "
        "list`); it must exist, it is never created (default: the exporter's own)",
    )
    #: Deadline of one netlink dump, in seconds.
    timeout: float = setting(
        5.0,
        flag="--collector.kernel.timeout",
        yaml="collectors.kernel.timeout",
        kind=schema.duration(zero_ok=False),
        example="1500ms",
        reload="restart",
        help="deadline of one netlink dump (ppp, L2TP, XFRM); a dump over it fails that "
        "collector for the scrape",
    )
