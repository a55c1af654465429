"""The real runner (exporter.libreswan.commands) against small real executables written
to tmp_path: shell scripts standing in for `ipsec`, run as real processes (no mocks of
subprocess). The messages whack prints when pluto is not there are copied from whack
4.10 (programs/whack/whack.c) and 5.2 (lib/libwhack/send.c)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from exporter.libreswan.commands import (
    ControlSocketDenied,
    IpsecFailed,
    IpsecMissing,
    IpsecOutputTooLarge,
    IpsecRunner,
    IpsecTimeout,
    PlutoNotRunning,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libreswan"


def script(tmp_path: Path, body: str, name: str = "ipsec") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def runner(ipsec: Path, **kw: object) -> IpsecRunner:
    return IpsecRunner(ipsec=ipsec, ctl_socket=Path("/tmp/test-pluto.ctl"), **kw)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper does not count)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


async def test_asks_through_whack_with_the_control_socket(tmp_path: Path) -> None:
    recording = FIXTURES / "bookworm" / "trafficstatus.txt"
    ipsec = script(tmp_path, f'printf "%s\\n" "$@" > {tmp_path}/argv\ncat {recording}\n')
    out = await runner(ipsec)("trafficstatus")
    assert out == recording.read_text()
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["whack", "--ctlsocket", "/tmp/test-pluto.ctl", "--trafficstatus"]
    await runner(ipsec)("version")
    assert (tmp_path / "argv").read_text().splitlines() == ["--version"]


async def test_stdin_is_devnull_and_bytes_are_decoded_with_replace(tmp_path: Path) -> None:
    # `cat` copies stdin: /dev/null gives EOF at once (a terminal or pipe would hang it).
    ipsec = script(tmp_path, "cat\nprintf 'id=\\377\\376ok\\n'\n")
    assert await runner(ipsec)("status") == "id=\ufffd\ufffdok\n"


async def test_a_missing_program_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "ipsec"
    with pytest.raises(IpsecMissing) as err:
        await runner(missing)("trafficstatus")
    assert str(err.value) == f"no ipsec program at {missing}"


async def test_a_program_that_is_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "ipsec"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)  # no x bit: execve refuses it even to root
    with pytest.raises(IpsecMissing, match="is not executable"):
        await runner(path)("trafficstatus")


async def test_non_zero_exit_gives_the_first_stderr_line(tmp_path: Path) -> None:
    ipsec = script(tmp_path, "echo 'first trouble' >&2\necho 'second' >&2\nexit 1\n")
    with pytest.raises(IpsecFailed) as err:
        await runner(ipsec)("showstates")
    assert str(err.value) == "ipsec whack --showstates exited with status 1: first trouble"


async def test_non_zero_exit_without_stderr(tmp_path: Path) -> None:
    ipsec = script(tmp_path, "exit 3\n")
    with pytest.raises(IpsecFailed) as err:
        await runner(ipsec)("status")
    assert str(err.value) == "ipsec whack --status exited with status 3 (nothing on stderr)"


@pytest.mark.parametrize(
    "stderr",
    [
        'whack: Pluto is not running (no "/tmp/test-pluto.ctl")',  # 4.10, no socket
        'whack: is Pluto running?  connect() for "/tmp/test-pluto.ctl" failed (111 Connection'
        " refused)",  # 4.10, stale socket
        'ERROR: ipsec whack: Pluto is not running (no "/tmp/test-pluto.ctl"): No such file or'
        " directory (errno 2)",  # 5.2
        "ERROR: ipsec whack: connect(pluto_ctl) failed: Connection refused (errno 111)",  # 5.2
    ],
)
async def test_pluto_not_running(tmp_path: Path, stderr: str) -> None:
    ipsec = script(tmp_path, f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit 33\n")
    with pytest.raises(PlutoNotRunning) as err:
        await runner(ipsec)("trafficstatus")
    message = str(err.value)
    assert message.startswith("pluto is not running: nothing answers on its control socket ")
    assert "/tmp/test-pluto.ctl" in message and "\n" not in message


async def test_control_socket_denied(tmp_path: Path) -> None:
    stderr = 'whack: no right to communicate with pluto (access("/tmp/test-pluto.ctl"))'
    ipsec = script(tmp_path, f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit 33\n")
    with pytest.raises(ControlSocketDenied, match="no permission to use pluto's control socket"):
        await runner(ipsec)("globalstatus")


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    # The script's own child holds stdout open too: killing only the script would leave
    # the read waiting for the sleep.
    ipsec = script(tmp_path, f"sleep 30 &\necho $! > {tmp_path}/child\nwait\n")
    started = time.monotonic()
    with pytest.raises(IpsecTimeout) as err:
        await runner(ipsec, timeout=0.5)("trafficstatus")
    assert time.monotonic() - started < 5
    assert str(err.value) == "ipsec whack --trafficstatus gave no answer within 0.5s (killed)"
    child = int((tmp_path / "child").read_text())
    for _ in range(50):  # SIGKILL is delivered asynchronously
        if not alive(child):
            break
        await asyncio.sleep(0.02)
    assert not alive(child)


async def test_output_over_the_limit_is_killed(tmp_path: Path) -> None:
    ipsec = script(tmp_path, "while :; do echo 000 0123456789abcdef; done\n")
    started = time.monotonic()
    with pytest.raises(IpsecOutputTooLarge) as err:
        await runner(ipsec, max_output=100_000, timeout=10)("status")
    assert time.monotonic() - started < 5
    assert str(err.value) == "ipsec whack --status printed more than 100000 bytes (killed)"


async def test_stderr_over_the_limit_is_killed_too(tmp_path: Path) -> None:
    ipsec = script(tmp_path, "while :; do echo noise >&2; done\n")
    with pytest.raises(IpsecOutputTooLarge):
        await runner(ipsec, max_output=10_000, timeout=10)("status")


async def test_a_cancelled_scrape_leaves_no_process(tmp_path: Path) -> None:
    ipsec = script(tmp_path, f"echo $$ > {tmp_path}/pid\nexec sleep 30\n")
    task = asyncio.create_task(runner(ipsec, timeout=30)("trafficstatus"))
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not alive(int((tmp_path / "pid").read_text()))


def test_unknown_query_is_refused() -> None:
    with pytest.raises(ValueError, match="not a status query"):
        IpsecRunner().argv("shutdown")
