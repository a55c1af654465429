"""The state directory the shipped pppd hooks write (contrib/ppp/ip-up.d/, ip-down.d/).

One file per ppp interface, named after it, of `KEY=value` lines; ip-down removes it
(after writing an *ended record* under `ended/`, which `exporter.logins.records` reads).
pppd killed with SIGKILL runs no ip-down, so a record can outlive its session: it then
names an interface index that no longer matches the live interface of that name, and
the reader's caller drops it (see `PppHookRecord.ifindex`).

The files are read as untrusted input: a record larger than `MAX_RECORD_BYTES`, not
UTF-8, not a regular file, or owned by anyone but root or the exporter's own user is
rejected, with one log line per record and a count by reason (`RecordRejections`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from pathlib import Path

from exporter.kernel.model import PppHookRecord

DEFAULT_STATE_DIR = Path("/run/l2tp-ipsec-exporter/ppp")
#: The ip-down hook's ended records, under the state directory.
ENDED_DIR = "ended"
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")

#: A record is a dozen short lines; anything larger is not one the hooks wrote.
MAX_RECORD_BYTES = 4096
#: Why a record was rejected (the `reason` label of l2tp_ipsec_login_records_rejected_total).
REJECT_REASONS = ("too_large", "not_utf8", "foreign_owner", "malformed")

log = logging.getLogger("exporter.kernel.hook")


class RecordRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RecordRejections:
    """Counts rejected records by reason, each record (path) once while it stays there,
    and logs one line per record: a bad file read at every scrape is one line, not one
    per scrape. What it remembers is bounded by the files present."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self._seen: dict[str, set[str]] = {}

    def note(self, scope: str, path: Path, err: RecordRejected, current: set[str]) -> None:
        """`current` collects this read's rejected paths of `scope` (see `forget_others`)."""
        key = str(path)
        current.add(key)
        if key in self._seen.get(scope, set()):
            return
        self._seen.setdefault(scope, set()).add(key)
        self.counts[err.reason] = self.counts.get(err.reason, 0) + 1
        log.warning(
            "ignoring a pppd hook record",
            extra={"path": key, "reason": err.reason, "err": str(err)},
        )

    def forget_others(self, scope: str, current: set[str]) -> None:
        """After a whole read of `scope`: records no longer there are forgotten."""
        self._seen[scope] = current


#: The rejections of this process's readers (the up records and the ended records).
REJECTIONS = RecordRejections()


def allowed_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def read_record_text(path: Path, owners: frozenset[int] | None = None) -> str:
    """The text of one record; raises `RecordRejected`, or OSError when it is gone."""
    owners = allowed_owners() if owners is None else owners
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the reader; O_NOFOLLOW: a link
        # must not make us read some other file.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RecordRejected("malformed", "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordRejected("malformed", "not a regular file")
        if st.st_uid not in owners:
            raise RecordRejected("foreign_owner", f"owned by uid {st.st_uid}")
        if st.st_size > MAX_RECORD_BYTES:
            raise RecordRejected("too_large", f"{st.st_size} bytes")
        data = os.read(fd, MAX_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD_BYTES:
        raise RecordRejected("too_large", f"more than {MAX_RECORD_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordRejected("not_utf8", str(err)) from None


def parse_values(text: str) -> dict[str, str]:
    """`KEY=value` lines; the last of a repeated key wins."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_record(interface: str, text: str) -> PppHookRecord:
    values = parse_values(text)
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


def read_state_dir(
    directory: Path, rejections: RecordRejections | None = None
) -> dict[str, PppHookRecord]:
    """Interface name → record; an unreadable or missing directory reads as empty."""
    rejections = REJECTIONS if rejections is None else rejections
    out: dict[str, PppHookRecord] = {}
    try:
        entries = list(directory.iterdir())
    except OSError:
        return out
    owners = allowed_owners()
    rejected: set[str] = set()
    for path in entries:
        if not _NAME.match(path.name) or path.name.startswith(".") or path.name == ENDED_DIR:
            continue  # the hook's temporary files start with a dot
        try:
            out[path.name] = parse_record(path.name, read_record_text(path, owners))
        except RecordRejected as err:
            rejections.note("up", path, err, rejected)
        except OSError:
            continue
    rejections.forget_others("up", rejected)
    return out
