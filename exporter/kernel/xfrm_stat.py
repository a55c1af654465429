"""`/proc/net/xfrm_stat`: the kernel's XFRM error counters (node_exporter's xfrm data)."""

from __future__ import annotations

from exporter.kernel.netlink import NetnsGone
from exporter.kernel.procnet import read_proc_net


def parse_xfrm_stat(text: str) -> dict[str, int]:
    """Counter name (the kernel's, e.g. `XfrmInTmplMismatch`) → value."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isascii() and parts[1].isdecimal():
            out[parts[0]] = int(parts[1])
    return out


def read_xfrm_stat(netns: str | None = None) -> dict[str, int] | None:
    """The counters of `netns` (None: ours); None when the file is missing (kernel without
    CONFIG_XFRM_STATISTICS). Blocking."""
    try:
        return parse_xfrm_stat(read_proc_net("xfrm_stat", netns))
    except NetnsGone:
        raise
    except FileNotFoundError:
        return None
