"""Hook records as hostile input: truncated, not UTF-8, huge, written by another user,
not a file at all. Each is ignored with one log line (not one per scrape) and counted once
by reason in l2tp_ipsec_login_records_rejected_total; the good records next to it count."""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from exporter.kernel.hook import RecordRejections, read_state_dir
from exporter.logins.records import EndedRecordReader
from tests.hostile.helpers import no_hang

GOOD = "PEERNAME=alice\nBYTES_RCVD=100\nDOWN_AT=1764745106\n"
UP = "IFNAME=ppp0\nIFINDEX=7\nPEERNAME=alice\nPPPD_PID=12\nUP_SINCE=1764745000\n"
NOBODY = pwd.getpwnam("nobody").pw_uid


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def bad_records(directory: Path) -> dict[str, str]:
    """Name → the reason it must be rejected for."""
    directory.mkdir()
    (directory / "1764745101.ppp0.1").write_text(GOOD[:-1])  # truncated: no final newline
    (directory / "1764745102.ppp0.2").write_text(GOOD[:20])  # truncated mid-line
    (directory / "1764745103.ppp0.3").write_bytes(b"PEERNAME=caf\xe9\n" + GOOD[15:].encode())
    (directory / "1764745104.ppp0.4").write_text("PEERNAME=x\n" * 1000 + GOOD)
    with (directory / "1764745105.ppp0.5").open("wb") as f:
        f.truncate(200 * 2**20)  # sparse 200 MiB: never read whole
    foreign = directory / "1764745106.ppp0.6"
    foreign.write_text(GOOD)
    os.chown(foreign, NOBODY, -1)
    os.mkfifo(directory / "1764745107.ppp0.7")  # must not hang the reader
    (directory / "1764745108.ppp0.8").symlink_to("/etc/shadow")
    (directory / "1764745109.ppp0.9").mkdir()
    (directory / "1764745110.ppp0.10").write_text(GOOD)
    return {
        "1764745101.ppp0.1": "malformed",
        "1764745102.ppp0.2": "malformed",
        "1764745103.ppp0.3": "not_utf8",
        "1764745104.ppp0.4": "too_large",
        "1764745105.ppp0.5": "too_large",
        "1764745106.ppp0.6": "foreign_owner",
        "1764745107.ppp0.7": "malformed",
        "1764745108.ppp0.8": "malformed",
        "1764745109.ppp0.9": "malformed",
    }


def test_bad_ended_records_are_ignored_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = bad_records(tmp_path / "ended")
    rejections = RecordRejections()
    reader = EndedRecordReader(tmp_path / "ended", rejections)
    with caplog.at_level(logging.WARNING), no_hang(5):
        for _ in range(3):  # three scrapes
            got = reader.read()
            assert got is not None and [r.name for r in got] == ["1764745110.ppp0.10"]
    logged = {Path(r.__dict__["path"]).name: r.__dict__["reason"] for r in warnings(caplog)}
    assert logged == expected
    assert len(warnings(caplog)) == len(expected)  # one line per record, not per scrape
    assert rejections.counts == {"too_large": 2, "not_utf8": 1, "foreign_owner": 1, "malformed": 5}


def test_a_rejected_record_removed_and_written_again_counts_again(tmp_path: Path) -> None:
    directory = tmp_path / "ended"
    directory.mkdir()
    rejections = RecordRejections()
    reader = EndedRecordReader(directory, rejections)
    bad = directory / "1764745101.ppp0.1"
    bad.write_text("junk")
    reader.read()
    reader.read()
    bad.unlink()
    reader.read()
    bad.write_text("junk")
    reader.read()
    assert rejections.counts["malformed"] == 2


def test_bad_up_records_are_ignored_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ppp0").write_text(UP)
    (tmp_path / "ppp1").write_bytes(b"PEERNAME=\xff\xfe\n")
    (tmp_path / "ppp2").write_text(UP + "X=" + "y" * 5000 + "\n")
    (tmp_path / "ppp3").write_text(UP)
    os.chown(tmp_path / "ppp3", NOBODY, -1)
    (tmp_path / "ppp4").symlink_to(tmp_path / "ppp0")
    os.mkfifo(tmp_path / "ppp5")
    (tmp_path / "ended").mkdir()  # the ended records' directory is no up record
    rejections = RecordRejections()
    with caplog.at_level(logging.WARNING), no_hang(5):
        for _ in range(3):
            assert list(read_state_dir(tmp_path, rejections)) == ["ppp0"]
    assert len(warnings(caplog)) == 5
    assert rejections.counts == {"too_large": 1, "not_utf8": 1, "foreign_owner": 1, "malformed": 2}
