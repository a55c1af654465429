"""The shipped pppd hooks (contrib/ppp/) as pppd runs them, for per-login accounting:
ip-down leaves an ended record the exporter reads (exporter/logins/records.py).

The environment is what pppd 2.4.9 and 2.5.2 gave the hooks in the vmlab guest
(docs/logins.md): PEERNAME and PPPD_PID at ip-up and ip-down, plus BYTES_SENT,
BYTES_RCVD and CONNECT_TIME at ip-down; arguments interface, tty, speed, local address,
peer address, ipparam. The interface is `lo`, a real one here.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.kernel.hook import RecordRejections, read_state_dir
from exporter.logins.records import EndedRecordReader

CONTRIB = Path(__file__).resolve().parent.parent.parent / "contrib" / "ppp"
UP = CONTRIB / "ip-up.d" / "l2tp-ipsec-exporter"
DOWN = CONTRIB / "ip-down.d" / "l2tp-ipsec-exporter"
ARGS = ("lo", "", "0", "192.168.42.1", "192.168.42.10", "")
#: Whatever goes wrong, a hook returns at once (pppd waits for ip-up before routing).
FAST = 5.0


def run(script: Path, state: Path, *args: str, **env: str) -> float:
    """Run a hook as pppd does; it must exit 0. Returns how long it took."""
    full = {"PATH": os.environ["PATH"], "L2TP_IPSEC_EXPORTER_STATE_DIR": str(state), **env}
    started = time.monotonic()
    subprocess.run(["/bin/sh", str(script), *args], env=full, check=True, timeout=FAST)
    return time.monotonic() - started


def down_env(**extra: str) -> dict[str, str]:
    env = {"PEERNAME": "alice", "PPPD_PID": "4242"}
    env.update(BYTES_SENT="24040", BYTES_RCVD="25984", CONNECT_TIME="93")
    env.update(extra)
    return env


def read_ended(state: Path, rejections: RecordRejections | None = None) -> list:  # type: ignore[type-arg]
    records = EndedRecordReader(state / "ended", rejections or RecordRejections()).read()
    assert records is not None
    return records


def test_ip_down_writes_the_ended_record_and_removes_the_up_record(tmp_path: Path) -> None:
    run(UP, tmp_path, *ARGS, PEERNAME="alice", PPPD_PID="4242")
    before = time.time()
    run(DOWN, tmp_path, *ARGS, **down_env())
    (record,) = read_ended(tmp_path)
    assert record.name.endswith(".lo.4242")
    assert (record.login, record.interface, record.pppd_pid) == ("alice", "lo", 4242)
    assert record.ifindex == int(Path("/sys/class/net/lo/ifindex").read_text())
    assert (record.receive_bytes, record.transmit_bytes, record.connect_seconds) == (
        25984,
        24040,
        93,
    )
    assert record.inner_address == "192.168.42.10"
    assert record.started_at is not None and int(before) <= record.ended_at <= time.time()
    # `lo` is still the interface ip-up saw: its packets are read.
    assert record.receive_packets is not None and record.transmit_packets is not None
    assert read_state_dir(tmp_path) == {}
    assert sorted(p.name for p in (tmp_path / "ended").iterdir()) == [record.name]


def test_packets_are_not_read_from_another_interface_of_that_name(tmp_path: Path) -> None:
    """pppd has usually taken the interface down when ip-down runs, and a new session may
    have the name already: the hook checks the index ip-up recorded."""
    run(UP, tmp_path, *ARGS, PEERNAME="alice", PPPD_PID="4242")
    up = tmp_path / "lo"
    up.write_text(up.read_text().replace("IFINDEX=", "IFINDEX=9999"))
    run(DOWN, tmp_path, *ARGS, **down_env())
    (record,) = read_ended(tmp_path)
    assert (record.receive_packets, record.transmit_packets) == (None, None)
    assert record.receive_bytes == 25984


def test_ip_down_without_an_up_record_records_pppds_environment(tmp_path: Path) -> None:
    """accel-ppp's pppd_compat, or the hooks installed while the session was up."""
    run(DOWN, tmp_path, "ppp7", "", "0", "10.1.0.1", "10.1.0.9", "", **down_env(PEERNAME="bob"))
    (record,) = read_ended(tmp_path)
    assert (record.login, record.interface, record.ifindex) == ("bob", "ppp7", None)
    assert (record.inner_address, record.started_at, record.receive_bytes) == (
        "10.1.0.9",
        None,
        25984,
    )


def test_accel_ppps_pppd_compat_environment(tmp_path: Path) -> None:
    """What accel-ppp's pppd_compat.c (fill_argv, fill_env) hands the scripts: argv
    ifname, "none", "0", local, peer, calling station; an environment of its own (no PATH,
    no PPPD_PID) with PEERNAME, and at ip-down CONNECT_TIME, BYTES_* and PACKETS_*. Not
    run against a real accel-ppp (docs/logins.md)."""
    argv = ("ppp0", "none", "0", "10.2.0.1", "10.2.0.5", "198.51.100.7")
    env = {"L2TP_IPSEC_EXPORTER_STATE_DIR": str(tmp_path), "PEERNAME": "carol"}
    env.update(CALLING_SID="198.51.100.7", CALLED_SID="192.0.2.1")
    for script, extra in (
        (UP, {}),
        (DOWN, {"CONNECT_TIME": "61", "BYTES_SENT": "700", "BYTES_RCVD": "800"}),
    ):
        extra = {**extra, "PACKETS_SENT": "7", "PACKETS_RCVD": "8"} if extra else extra
        subprocess.run(
            ["/bin/sh", str(script), *argv], env={**env, **extra}, check=True, timeout=FAST
        )
    (record,) = read_ended(tmp_path)
    assert (record.login, record.interface, record.pppd_pid, record.ipparam) == (
        "carol",
        "ppp0",
        None,
        "198.51.100.7",
    )
    assert (record.receive_bytes, record.transmit_bytes, record.connect_seconds) == (800, 700, 61)
    assert (record.receive_packets, record.transmit_packets) == (8, 7)
    assert record.started_at is not None
    assert read_state_dir(tmp_path) == {}


def test_a_late_ip_down_of_an_older_pppd_keeps_the_newer_up_record(tmp_path: Path) -> None:
    run(UP, tmp_path, *ARGS, PEERNAME="alice", PPPD_PID="111")
    run(DOWN, tmp_path, *ARGS, **down_env(PEERNAME="old", PPPD_PID="99"))
    assert read_state_dir(tmp_path)["lo"].pppd_pid == 111
    (record,) = read_ended(tmp_path)
    assert (record.login, record.pppd_pid, record.ifindex) == ("old", 99, None)


def test_only_the_newest_1000_records_are_kept(tmp_path: Path) -> None:
    ended = tmp_path / "ended"
    ended.mkdir()
    for i in range(1005):
        (ended / f"{1_700_000_000 + i}.ppp9.{i}").write_text(f"DOWN_AT={1_700_000_000 + i}\n")
    (ended / ".1700000000.ppp9.1").write_text("a temporary file of a hook still writing")
    run(DOWN, tmp_path, *ARGS, **down_env())
    names = sorted(p.name for p in ended.iterdir() if not p.name.startswith("."))
    assert len(names) == 1000
    assert names[0] == f"{1_700_000_000 + 6}.ppp9.6"  # the six oldest went
    assert names[-1].endswith(".lo.4242")
    assert (ended / ".1700000000.ppp9.1").exists()


def test_a_hostile_peername_stays_one_value(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = f"eve\nBYTES_RCVD=999999999\nDOWN_AT=1\n$(touch {marker})`touch {marker}`"
    run(UP, tmp_path, *ARGS, PEERNAME=hostile, PPPD_PID="4242")
    run(DOWN, tmp_path, *ARGS, **down_env(PEERNAME=hostile))
    (record,) = read_ended(tmp_path)
    assert record.login == hostile.replace("\n", "")
    assert record.receive_bytes == 25984 and record.ended_at > 1
    # Without an up record the hook writes the environment's PEERNAME itself.
    run(DOWN, tmp_path / "no-up", *ARGS, **down_env(PEERNAME=hostile))
    (record,) = read_ended(tmp_path / "no-up")
    assert record.login == hostile.replace("\n", "")
    assert record.receive_bytes == 25984 and record.ended_at > 1
    assert not marker.exists()


def test_a_peername_that_is_not_utf8_is_rejected_by_the_reader(tmp_path: Path) -> None:
    env = {**down_env(), "PEERNAME": "caf\udce9"}  # the byte 0xe9, not UTF-8
    full = {"PATH": os.environ["PATH"], "L2TP_IPSEC_EXPORTER_STATE_DIR": str(tmp_path), **env}
    subprocess.run(["/bin/sh", str(DOWN), *ARGS], env=full, check=True, timeout=FAST)
    rejections = RecordRejections()
    assert read_ended(tmp_path, rejections) == []
    assert rejections.counts["not_utf8"] == 1


def test_hostile_arguments_and_counts(tmp_path: Path) -> None:
    run(DOWN, tmp_path, "../etc", **down_env())
    run(DOWN, tmp_path, ".hidden", **down_env())
    assert not (tmp_path / "ended").exists()
    run(DOWN, tmp_path, *ARGS, **down_env(BYTES_RCVD="12abc", CONNECT_TIME="-5"))
    (record,) = read_ended(tmp_path)
    assert (record.receive_bytes, record.connect_seconds, record.transmit_bytes) == (
        None,
        None,
        24040,
    )


# -- a full or read-only state directory never breaks pppd -----------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (we are root in the test environment)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "none", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_state_directory(small_fs: Path) -> None:
    state = small_fs / "ppp"
    assert run(UP, state, *ARGS, PEERNAME="alice", PPPD_PID="4242") < FAST
    filler = small_fs / "filler"
    with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"x" * 4096)
            f.flush()
    assert run(DOWN, state, *ARGS, **down_env()) < FAST
    # Nothing half-written is left for the reader; the up record is gone.
    assert read_ended(state) == []
    assert [p.name for p in (state / "ended").iterdir()] == []
    assert read_state_dir(state) == {}
    assert run(UP, state, *ARGS, PEERNAME="bob", PPPD_PID="4243") < FAST


def test_a_read_only_state_directory(small_fs: Path) -> None:
    state = small_fs / "ppp"
    run(UP, state, *ARGS, PEERNAME="alice", PPPD_PID="4242")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    assert run(DOWN, state, *ARGS, **down_env()) < FAST
    assert run(UP, state, *ARGS, PEERNAME="bob", PPPD_PID="4243") < FAST
    assert not (state / "ended").exists()
    assert read_state_dir(state)["lo"].peer_name == "alice"
