"""What every netlink dump here shares: opening the socket (in a named network namespace,
if asked), collecting an answer and spotting errors in it."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError

#: Where `ip netns add NAME` mounts a named namespace (pyroute2 looks there too).
NETNS_DIR = Path("/var/run/netns")

# pyroute2 opens a socket in another namespace from a forked child, and stops the child
# with SIGTERM. A forked child keeps asyncio's signal handler, which writes the signal to
# the wakeup socket it shares with us: our loop then saw SIGTERM and the daemon shut
# down. With this, the child takes SIGTERM with the default action instead.
pyroute2_config.disable_mp_signal = True


class NetnsGone(FileNotFoundError):
    """The named network namespace the kernel collectors read does not exist (any more)."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.ENOENT, f"network namespace {name!r} is gone")


def netns_problem(name: str) -> str | None:
    """Why `name` cannot be read as a named network namespace; None when it can."""
    if not name or "/" in name or name in (".", ".."):
        return "expected a name from `ip netns list`"
    if not (NETNS_DIR / name).exists():
        return f"no such network namespace (not in {NETNS_DIR}; `ip netns list` shows them)"
    return None


def socket_args(netns: str | None) -> dict[str, Any]:
    """Keyword arguments for a pyroute2 socket in `netns` (None: our own namespace).

    pyroute2 opens a named namespace with O_CREAT by default: a name that is not there
    would be *created*, empty, and read as healthy. flags=0 opens only what exists; the
    check first turns the common case into a message that names the namespace.
    """
    if not netns:
        return {}
    if netns_problem(netns) is not None:
        raise NetnsGone(netns)
    return {"netns": netns, "flags": 0}


def netns_error(netns: str | None, err: OSError) -> OSError:
    """`err` from opening a socket, as `NetnsGone` when the namespace went away."""
    if netns and isinstance(err, FileNotFoundError) and netns_problem(netns) is not None:
        return NetnsGone(netns)
    return err


NLMSG_ERROR = 2
NLMSG_DONE = 3


async def collect_dump(answer: AsyncIterable[Any]) -> list[Any]:
    """Every message of a dump answer; pyroute2 stops at NLMSG_DONE."""
    return [msg async for msg in answer]


def check_errors(msgs: Iterable[Any]) -> Iterator[Any]:
    """The messages, raising the kernel's error when one of them carries one.

    pyroute2 raises for an NLMSG_ERROR on a live socket; a decoded recording keeps the
    error in the message header, so both paths end in the same `NetlinkError`.
    """
    for msg in msgs:
        error = msg["header"].get("error")
        if error is not None:
            if isinstance(error, NetlinkError | OSError):
                raise error
            raise NetlinkError(0, str(error))
        if msg["header"]["type"] in (NLMSG_ERROR, NLMSG_DONE):
            continue
        yield msg


# pyroute2 leaves an attribute it cannot decode (cut short, wrong size) as raw bytes. The
# readers below turn such an attribute into "missing" instead of a crash further on.


def struct_attr(msg: Any, name: str) -> Any | None:
    """A structured attribute (nested attributes, a C struct), or None."""
    value = msg.get_attr(name)
    return None if value is None or isinstance(value, bytes | bytearray | str) else value


def text_attr(msg: Any, name: str) -> str:
    value = msg.get_attr(name)
    return value if isinstance(value, str) else ""


def int_attr(msg: Any, name: str) -> int:
    value = msg.get_attr(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
