"""Running Libreswan's `ipsec` commands: no shell, a deadline, bounded output, one typed
error with one clear message per way it fails.

pluto has no stable wire API (whack's message struct is tied to the exact build), so the
exporter runs the commands. The status queries go through
`ipsec whack --ctlsocket PATH --OPTION`: both 4.x's and 5.x's `ipsec` (shell scripts)
exec whack with the arguments as given when `--ctlsocket` is among them, and whack 4.10
and 5.2 share the option names (`--trafficstatus`, `--showstates`, `--globalstatus`,
`--status`). `ipsec --version` is answered by the script itself, without pluto.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The status queries the exporter asks, by whack option.
WHACK_QUERIES = ("trafficstatus", "showstates", "globalstatus", "status", "briefstatus")
#: What whack 4.10 (programs/whack/whack.c) and 5.2 (lib/libwhack/send.c) print on stderr
#: when the control socket is not there or nobody listens on it.
_NOT_RUNNING = ("pluto is not running", "is pluto running", "connect(")
_DENIED = "no right to communicate with pluto"
#: An stderr line quoted in a message is cut here.
_QUOTE_MAX = 200
_CHUNK = 65536


class IpsecError(Exception):
    """A command could not give its answer; str() is one line, fit for a log."""


class IpsecMissing(IpsecError):
    """The `ipsec` program is not at the configured path (or is not executable)."""


class PlutoNotRunning(IpsecError):
    """whack found no control socket, or nothing accepted the connection on it."""


class ControlSocketDenied(IpsecError):
    """The exporter's user may not use pluto's control socket."""


class IpsecFailed(IpsecError):
    """The command exited with a non-zero status for another reason."""


class IpsecTimeout(IpsecError):
    """The command ran past its deadline; it was killed with its process group."""


class IpsecOutputTooLarge(IpsecError):
    """The command printed more than the limit; it was killed with its process group."""


def _quote(line: str) -> str:
    """One stderr line, printable and short, for a message."""
    text = "".join(c if c.isprintable() else "?" for c in line.strip())
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "…"


@dataclass(frozen=True)
class IpsecRunner:
    """Asks one query of pluto through `ipsec`: `await runner("trafficstatus")` → stdout.

    The queries are "version" and the `WHACK_QUERIES`. Output is decoded as UTF-8 with
    undecodable bytes replaced; the parsers get text."""

    ipsec: Path = Path("/usr/sbin/ipsec")
    ctl_socket: Path = Path("/run/pluto/pluto.ctl")
    #: Seconds one command may take.
    timeout: float = 5.0
    #: Bytes one command may print on stdout (and, separately, on stderr). `ipsec status`
    #: prints ~17 KB with three clients and about 1.5 KB more per connected client.
    max_output: int = 16 * 1024 * 1024

    def argv(self, query: str) -> list[str]:
        if query == "version":
            return [str(self.ipsec), "--version"]
        if query not in WHACK_QUERIES:
            raise ValueError(f"not a status query: {query!r}")
        return [str(self.ipsec), "whack", "--ctlsocket", str(self.ctl_socket), f"--{query}"]

    async def __call__(self, query: str) -> str:
        argv = self.argv(query)
        # In messages `ipsec whack --trafficstatus`: the socket is named where it matters.
        shown = " ".join([self.ipsec.name, *argv[1:]]).replace(
            f" --ctlsocket {self.ctl_socket}", ""
        )
        stdout, stderr, status = await run_command(
            argv, timeout=self.timeout, max_output=self.max_output, shown=shown
        )
        if status != 0:
            raise self._failure(shown, status, stderr)
        return stdout.decode("utf-8", errors="replace")

    def _failure(self, shown: str, status: int, stderr: bytes) -> IpsecError:
        lines = [ln for ln in stderr.decode("utf-8", errors="replace").splitlines() if ln.strip()]
        first = _quote(lines[0]) if lines else ""
        said = " ".join(lines).lower()
        if _DENIED in said:
            return ControlSocketDenied(
                f"no permission to use pluto's control socket {self.ctl_socket} "
                f"(run as root or as a user that may open it)"
            )
        if any(mark in said for mark in _NOT_RUNNING):
            return PlutoNotRunning(
                f"pluto is not running: nothing answers on its control socket "
                f"{self.ctl_socket} ({first})"
            )
        detail = f": {first}" if first else " (nothing on stderr)"
        return IpsecFailed(f"{shown} exited with status {status}{detail}")


async def run_command(
    argv: Sequence[str], *, timeout: float, max_output: int, shown: str | None = None
) -> tuple[bytes, bytes, int]:
    """Run `argv` without a shell, stdin from /dev/null, in a process group of its own:
    (stdout, stderr, exit status). Past `timeout` seconds, or past `max_output` bytes on
    either stream, the whole group is killed and reaped (the `ipsec` script's children
    too) and `IpsecTimeout` / `IpsecOutputTooLarge` raised; a missing program is
    `IpsecMissing`."""
    name = shown or " ".join(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise IpsecMissing(f"no ipsec program at {argv[0]}") from None
    except PermissionError:
        raise IpsecMissing(f"{argv[0]} is not executable by the exporter's user") from None
    except OSError as err:
        raise IpsecMissing(f"cannot run {argv[0]}: {err.strerror or err}") from None
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.ensure_future(_read(proc.stdout, max_output)),
        asyncio.ensure_future(_read(proc.stderr, max_output)),
    ]
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await asyncio.gather(*readers)
            status = await proc.wait()
    except TimeoutError:
        await _kill(proc, readers)
        raise IpsecTimeout(f"{name} gave no answer within {timeout:g}s (killed)") from None
    except _TooMuch:
        await _kill(proc, readers)
        raise IpsecOutputTooLarge(f"{name} printed more than {max_output} bytes (killed)") from None
    except BaseException:  # cancelled with the scrape: leave no process behind
        await _kill(proc, readers)
        raise
    # A child left running without the pipes is not killed here: once the leader is
    # reaped its process group id may be gone, and the number is not ours to signal.
    return stdout, stderr, status


class _TooMuch(Exception):
    pass


async def _read(stream: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooMuch
        chunks.append(chunk)
    return b"".join(chunks)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _kill(proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Future[bytes]]) -> None:
    """SIGKILL the process group, reap the leader (its children are reaped by init once
    their parent, the leader, is gone) and collect the pipe readers, whose own outcome
    no longer matters (gather stops at the first failure and leaves the other running)."""
    _killpg(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await proc.wait()
