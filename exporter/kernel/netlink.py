"""What every netlink dump here shares: collecting an answer and spotting errors in it."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Iterator
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

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
