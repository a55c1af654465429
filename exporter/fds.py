"""File descriptors: enough for the connection cap, and no log flood when they run out.

Each HTTP client connection holds one descriptor; VICI, netlink, probes and the process
itself need their own. At start the soft RLIMIT_NOFILE is raised (up to the hard limit)
to what the cap needs, or the start is refused with one line: a cap the process cannot
honour would end in EMFILE, where asyncio's accept loop logs "socket.accept() out of
system resource" with a traceback for every connection in the backlog, every second
(measured: 66,543 lines, 32 MB in 20 s) and every endpoint stops answering.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from exporter.config import WebLimits
from exporter.http_limits import BACKLOG

log = logging.getLogger("exporter")

#: The process's own descriptors besides client connections: stdio, the event loop's
#: epoll and self-pipe, the listening sockets, the two VICI connections, the netlink
#: sockets of the kernel collectors and the files read during a scrape - about 25,
#: with room to spare.
BASE_FDS = 64
#: One probe holds at most a UDP socket and, for a login probe, two VICI connections.
FDS_PER_PROBE = 4


class FdLimitError(Exception):
    """The hard RLIMIT_NOFILE is below what --web.max-connections needs."""


def fds_needed(limits: WebLimits, max_concurrent_probes: int = 0) -> int:
    """Descriptors the process may hold at once with `limits`: every client connection,
    one accept burst over the cap (closed right after), and the process's own."""
    return limits.max_connections + BACKLOG + BASE_FDS + FDS_PER_PROBE * max_concurrent_probes


def ensure_fd_budget(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to `needed` if it is lower; FdLimitError if the hard
    limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FdLimitError(
            f"--web.max-connections needs about {needed} file descriptors, but the process "
            f"may open only {hard} (RLIMIT_NOFILE hard limit; LimitNOFILE= in systemd): "
            "lower --web.max-connections or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info(
        "raised the open file limit for the connection cap",
        extra={"from": soft, "to": needed},
    )


ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def quiet_accept_exhaustion(loop: asyncio.AbstractEventLoop, interval: float = 60.0) -> None:
    """At most one line per `interval` for asyncio's "accept() out of system resource":
    a last line of defence (the cap and the fd budget keep it from happening); asyncio
    reports it once per backlogged connection per second otherwise."""
    previous = loop.get_exception_handler()
    last = float("-inf")
    suppressed = 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last, suppressed
        if not str(context.get("message", "")).startswith(ACCEPT_EXHAUSTED):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = loop.time()
        if now - last < interval:
            suppressed += 1
            return
        log.error(
            "out of file descriptors: new HTTP connections wait until some close",
            extra={"err": str(context.get("exception", "")), "repeats": suppressed},
        )
        last, suppressed = now, 0

    loop.set_exception_handler(handler)
