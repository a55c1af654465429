"""The ended-record reader (exporter/logins/records.py): parsing, what counts as
malformed, reading each record once, the bound on how many are read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.kernel.hook import RecordRejected, RecordRejections
from exporter.logins import records
from exporter.logins.records import EndedRecordReader, parse_ended

#: What the ip-down hook wrote in the guest for one session (up record's lines first).
GUEST = """\
IFNAME=ppp0
IFINDEX=7
PEERNAME=nycmesh
IPLOCAL=192.168.42.1
IPREMOTE=192.168.42.10
IPPARAM=
PPPD_PID=2817
L2TP_TUNNEL_ID=35755
L2TP_SESSION_ID=51531
UP_SINCE=1764745012
BYTES_SENT=24040
BYTES_RCVD=25984
CONNECT_TIME=93
RX_PACKETS=
TX_PACKETS=
DOWN_AT=1764745106
"""


def test_a_record_as_the_hook_writes_it() -> None:
    record = parse_ended("1764745106.ppp0.2817", GUEST)
    assert (record.name, record.interface, record.ifindex, record.login) == (
        "1764745106.ppp0.2817",
        "ppp0",
        7,
        "nycmesh",
    )
    assert (record.inner_address, record.ipparam, record.pppd_pid) == ("192.168.42.10", "", 2817)
    assert (record.started_at, record.ended_at, record.connect_seconds) == (
        1764745012,
        1764745106,
        93,
    )
    assert (record.receive_bytes, record.transmit_bytes) == (25984, 24040)
    assert (record.receive_packets, record.transmit_packets) == (None, None)


def test_the_interface_comes_from_the_name_when_the_record_lacks_it() -> None:
    record = parse_ended("1764745106.ppp3.9", "PEERNAME=bob\nDOWN_AT=1764745106\n")
    assert (record.interface, record.login, record.receive_bytes) == ("ppp3", "bob", None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GUEST.replace("DOWN_AT=1764745106\n", ""), "no DOWN_AT"),
        (GUEST[:-1], "truncated"),
        (GUEST[: GUEST.index("BYTES_RCVD") + 5], "truncated"),
        (GUEST.replace("DOWN_AT=1764745106", "DOWN_AT=soon"), "DOWN_AT"),
        (GUEST.replace("DOWN_AT=1764745106", "DOWN_AT=nan"), "DOWN_AT"),
        (GUEST.replace("BYTES_RCVD=25984", "BYTES_RCVD=-1"), "BYTES_RCVD"),
        (GUEST.replace("BYTES_RCVD=25984", f"BYTES_RCVD={2**64}"), "BYTES_RCVD"),
        (GUEST.replace("CONNECT_TIME=93", "CONNECT_TIME=inf"), "CONNECT_TIME"),
        (GUEST.replace("IFINDEX=7", "IFINDEX=٣"), "IFINDEX"),  # a digit, not ASCII
    ],
)
def test_malformed_records(text: str, why: str) -> None:
    with pytest.raises(RecordRejected) as caught:
        parse_ended("1764745106.ppp0.2817", text)
    assert caught.value.reason == "malformed" and why in str(caught.value)


def write(directory: Path, name: str, text: str = GUEST) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_the_reader_reads_each_record_once_and_forgets_removed_ones(tmp_path: Path) -> None:
    reader = EndedRecordReader(tmp_path, RecordRejections())
    first = write(tmp_path, "1764745106.ppp0.2817")
    write(tmp_path, "1764745000.ppp1.2000", GUEST.replace("nycmesh", "alice"))
    write(tmp_path, ".1764745200.ppp2.2001", "half")  # the hook's temporary file
    write(tmp_path, "notes.txt", "not a record")
    got = reader.read()
    assert got is not None and [r.login for r in got] == ["alice", "nycmesh"]  # oldest first
    first.write_text(GUEST.replace("nycmesh", "changed"))  # records are never rewritten
    got = reader.read()
    assert got is not None and [r.login for r in got] == ["alice", "nycmesh"]
    first.unlink()
    got = reader.read()
    assert got is not None and [r.login for r in got] == ["alice"]


def test_no_directory_yet_is_no_record_and_an_unreadable_one_is_none(tmp_path: Path) -> None:
    assert EndedRecordReader(tmp_path / "ended").read() == []
    (tmp_path / "file").write_text("")
    assert EndedRecordReader(tmp_path / "file").read() is None


def test_only_the_newest_records_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_ENDED_RECORDS", 3)
    for t in (5, 40, 300, 2000, 10000):  # by time, not by name
        write(tmp_path, f"{t}.ppp0.1", f"PEERNAME=u{t}\nDOWN_AT={t}\n")
    got = EndedRecordReader(tmp_path, RecordRejections()).read()
    assert got is not None and [r.login for r in got] == ["u300", "u2000", "u10000"]


def test_a_record_of_the_exporters_own_user_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "1764745106.ppp0.2817")
    os.chown(path, os.geteuid(), os.getegid())
    got = EndedRecordReader(tmp_path, RecordRejections()).read()
    assert got is not None and len(got) == 1
