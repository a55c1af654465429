"""The state directory the shipped pppd hook writes (contrib/ppp/ip-up.d/).

One file per ppp interface, named after it, of `KEY=value` lines; ip-down removes it.
pppd killed with SIGKILL runs no ip-down, so a record can outlive its session: it then
names an interface index that no longer matches the live interface of that name, and
the reader's caller drops it (see `PppHookRecord.ifindex`).
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.kernel.model import PppHookRecord

DEFAULT_STATE_DIR = Path("/run/l2tp-ipsec-exporter/ppp")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_record(interface: str, text: str) -> PppHookRecord:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return PppHookRecord(
        interface=interface,
        ifindex=_int(values.get("IFINDEX", "")),
        peer_name=values.get("PEERNAME", ""),
        local_address=values.get("IPLOCAL", ""),
        peer_address=values.get("IPREMOTE", ""),
        ipparam=values.get("IPPARAM", ""),
        pppd_pid=_int(values.get("PPPD_PID", "")),
        up_since=_float(values.get("UP_SINCE", "")),
        l2tp_tunnel_id=_int(values.get("L2TP_TUNNEL_ID", "")),
        l2tp_session_id=_int(values.get("L2TP_SESSION_ID", "")),
    )


def read_state_dir(directory: Path) -> dict[str, PppHookRecord]:
    """Interface name → record; an unreadable or missing directory reads as empty."""
    out: dict[str, PppHookRecord] = {}
    try:
        entries = list(directory.iterdir())
    except OSError:
        return out
    for path in entries:
        if not _NAME.match(path.name) or path.name.startswith("."):
            continue  # the hook's temporary files start with a dot
        try:
            out[path.name] = parse_record(path.name, path.read_text(errors="replace"))
        except OSError:
            continue
    return out
