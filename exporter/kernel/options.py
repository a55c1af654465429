"""Settings of the kernel collectors (ppp, l2tp, xfrm, sessions); they are built from
them in exporter.collectors.kernel."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from exporter.kernel.hook import DEFAULT_STATE_DIR


@dataclass(frozen=True)
class KernelOptions:
    ppp: bool = True
    l2tp: bool = True
    xfrm: bool = True
    sessions: bool = True
    #: fnmatch pattern of the ppp interfaces that carry L2TP sessions.
    ppp_interfaces: str = "ppp*"
    #: Where the pppd hook (contrib/ppp/) writes one record per interface.
    state_dir: Path = DEFAULT_STATE_DIR
    #: The most series of a per-SA or per-session family (shared with strongSwan's).
    series_limit: int = 1000
    #: Deadline of one netlink dump, in seconds.
    timeout: float = 5.0
    #: A named network namespace (`ip netns`) to read instead of our own; None: ours.
    netns: str | None = None


def add_kernel_flags(parser: argparse.ArgumentParser) -> None:
    """The kernel collectors' flags (the series limit is --collector.strongswan.series-limit)."""
    for name, what in (
        ("ppp", "ppp interfaces: traffic, addresses, up since"),
        ("l2tp", "kernel L2TP tunnels and sessions"),
        ("xfrm", "kernel IPsec SAs and policies, /proc/net/xfrm_stat"),
        ("sessions", "one series per client joining ppp, L2TP, IKE SA and user"),
    ):
        parser.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"{what} (default on)",
        )
    parser.add_argument(
        "--collector.ppp.interfaces",
        dest="ppp_interfaces",
        default="ppp*",
        metavar="GLOB",
        help="ppp interfaces to export, a shell pattern (default ppp*)",
    )
    parser.add_argument(
        "--collector.sessions.state-dir",
        dest="sessions_state_dir",
        default=str(DEFAULT_STATE_DIR),
        metavar="PATH",
        help="where the shipped pppd hook records each interface's PPP user "
        f"(default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--collector.kernel.netns",
        dest="kernel_netns",
        default=None,
        metavar="NAME",
        help="read ppp, L2TP and XFRM state from this named network namespace (`ip netns "
        "list`); it must exist, it is never created (default: the exporter's own)",
    )


def kernel_options(args: argparse.Namespace) -> KernelOptions:
    """`KernelOptions` from parsed flags (`series_limit` from the strongSwan flag if set)."""
    return KernelOptions(
        ppp=args.collector_ppp,
        l2tp=args.collector_l2tp,
        xfrm=args.collector_xfrm,
        sessions=args.collector_sessions,
        ppp_interfaces=args.ppp_interfaces,
        state_dir=Path(args.sessions_state_dir),
        series_limit=getattr(args, "series_limit", 1000),
        netns=args.kernel_netns,
    )
