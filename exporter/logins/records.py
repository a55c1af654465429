"""The ip-down hook's ended records: `$STATE_DIR/ended/<unix time>.<interface>.<pppd pid>`.

Each is written once (a temporary file renamed into place) and never changed, so a record
is read and parsed once and remembered while its file is there; the hook keeps the newest
1000. Records are untrusted input, checked as the up records are
(`exporter.kernel.hook.read_record_text`: size, UTF-8, owner); one that is truncated (no
final newline, no `DOWN_AT`) or carries a number that is not one is `malformed`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from exporter.kernel.hook import (
    REJECTIONS,
    RecordRejected,
    RecordRejections,
    allowed_owners,
    parse_values,
    read_record_text,
)
from exporter.logins.model import EndedRecord

log = logging.getLogger("exporter.logins.records")

#: The hook keeps 1000; a directory fuller than this was not filled by it alone, and
#: only the newest are read.
MAX_ENDED_RECORDS = 2000
_RECORD_NAME = re.compile(r"^([0-9]{1,12})\.([A-Za-z0-9_.:-]{1,15})\.([0-9]{1,10})$")
_COUNT_LIMIT = 2**64


def _count(values: dict[str, str], key: str) -> int | None:
    text = values.get(key, "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) >= _COUNT_LIMIT:
        raise RecordRejected("malformed", f"{key}={text[:40]!r} is not a count")
    return int(text)


def _seconds(values: dict[str, str], key: str) -> float | None:
    text = values.get(key, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise RecordRejected("malformed", f"{key}={text[:40]!r} is not a time")
    return value


def parse_ended(name: str, text: str) -> EndedRecord:
    """One record's text → EndedRecord; raises RecordRejected("malformed", why)."""
    match = _RECORD_NAME.match(name)
    if match is None:
        raise RecordRejected("malformed", "not an ended record's name")
    if not text.endswith("\n"):
        raise RecordRejected("malformed", "truncated (no final newline)")
    values = parse_values(text)
    ended_at = _seconds(values, "DOWN_AT")
    if ended_at is None:
        raise RecordRejected("malformed", "no DOWN_AT")
    return EndedRecord(
        name=name,
        interface=values.get("IFNAME") or match.group(2),
        ifindex=_count(values, "IFINDEX"),
        login=values.get("PEERNAME", ""),
        inner_address=values.get("IPREMOTE", ""),
        ipparam=values.get("IPPARAM", ""),
        pppd_pid=_count(values, "PPPD_PID"),
        started_at=_seconds(values, "UP_SINCE"),
        ended_at=ended_at,
        connect_seconds=_seconds(values, "CONNECT_TIME"),
        receive_bytes=_count(values, "BYTES_RCVD"),
        transmit_bytes=_count(values, "BYTES_SENT"),
        receive_packets=_count(values, "RX_PACKETS"),
        transmit_packets=_count(values, "TX_PACKETS"),
    )


def _age_key(name: str) -> tuple[int, str]:
    match = _RECORD_NAME.match(name)
    return (int(match.group(1)) if match else 0, name)


class EndedRecordReader:
    """Reads the ended/ directory; parses each record once."""

    def __init__(self, directory: Path, rejections: RecordRejections | None = None) -> None:
        self.directory = directory
        self.rejections = REJECTIONS if rejections is None else rejections
        self._good: dict[str, EndedRecord] = {}
        self._bad: dict[str, RecordRejected] = {}
        self._unreadable = False

    def read(self) -> list[EndedRecord] | None:
        """The records there now, oldest first; None when the directory cannot be read
        (the ledger then keeps what it knows instead of taking every record for gone)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []  # no session has ended since the hooks were installed
        except OSError as err:
            if not self._unreadable:
                log.warning(
                    "cannot read the ended records",
                    extra={"path": str(self.directory), "err": str(err)},
                )
                self._unreadable = True
            return None
        self._unreadable = False
        names = sorted((n for n in names if _RECORD_NAME.match(n)), key=_age_key)
        names = names[-MAX_ENDED_RECORDS:]
        owners = allowed_owners()
        good: dict[str, EndedRecord] = {}
        bad: dict[str, RecordRejected] = {}
        rejected: set[str] = set()
        for name in names:
            record = self._good.get(name)
            if record is not None:
                good[name] = record
                continue
            path = self.directory / name
            problem = self._bad.get(name)
            if problem is None:
                try:
                    good[name] = parse_ended(name, read_record_text(path, owners))
                    continue
                except RecordRejected as err:
                    problem = err
                except OSError:
                    continue  # gone between the listing and the read (pruned)
            bad[name] = problem
            self.rejections.note("ended", path, problem, rejected)
        self.rejections.forget_others("ended", rejected)
        self._good, self._bad = good, bad
        return list(good.values())
