"""One reader of the kernel's tables, shared by the kernel collectors.

The collectors of one scrape run concurrently; the ppp and l2tp collectors and the
sessions join all need the same dumps, so each table is read once and the answer (or
the error) is handed to everyone who asked while it was in flight or shortly after.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from exporter.kernel.hook import read_state_dir
from exporter.kernel.l2tp import dump_l2tp
from exporter.kernel.model import L2tpSnapshot, PppHookRecord, PppInterface, XfrmSnapshot
from exporter.kernel.netlink import NetnsGone
from exporter.kernel.options import KernelOptions
from exporter.kernel.rtnl import dump_ppp
from exporter.kernel.xfrm import dump_xfrm
from exporter.kernel.xfrm_stat import read_xfrm_stat

T = TypeVar("T")


class Shared(Generic[T]):
    """Concurrent callers share one fetch; its result is reused for `max_age` seconds."""

    def __init__(self, fetch: Callable[[], Awaitable[T]], max_age: float = 1.0) -> None:
        self._fetch = fetch
        self._max_age = max_age
        self._task: asyncio.Task[T] | None = None
        self._started = 0.0

    async def get(self) -> T:
        now = time.monotonic()
        if self._task is None or (self._task.done() and now - self._started > self._max_age):
            self._started = now
            self._task = asyncio.ensure_future(self._run())
        # shield: one cancelled scrape must not cancel the dump others wait for.
        return await asyncio.shield(self._task)

    async def _run(self) -> T:
        try:
            return await self._fetch()
        except NetlinkError as err:
            raise as_os_error(err) from None


def as_os_error(err: NetlinkError) -> OSError:
    """pyroute2's NetlinkError is no OSError; the collectors handle OSError, and a missing
    capability deserves words an operator can act on."""
    if err.code in (errno.EPERM, errno.EACCES):
        return PermissionError(err.code, "netlink dump refused: the exporter needs CAP_NET_ADMIN")
    return OSError(err.code, f"netlink: {err}")


class KernelSource:
    def __init__(self, options: KernelOptions) -> None:
        self.options = options
        o = options
        self._ppp = Shared(lambda: dump_ppp(o.ppp_interfaces, o.timeout, o.netns))
        self._l2tp = Shared(lambda: dump_l2tp(o.timeout, o.netns))
        self._xfrm = Shared(lambda: dump_xfrm(o.timeout, o.netns))
        # The sessions join and the login tracker both read the hook records; one read
        # of the directory (a file per session) serves both, like the dumps.
        self._hooks = Shared(lambda: asyncio.to_thread(read_state_dir, o.state_dir))

    async def ppp(self) -> list[PppInterface]:
        return await self._ppp.get()

    async def l2tp(self) -> L2tpSnapshot:
        """Raises `L2tpUnavailable` when the kernel has no L2TP."""
        return await self._l2tp.get()

    async def xfrm(self) -> XfrmSnapshot:
        return await self._xfrm.get()

    async def xfrm_stat(self) -> dict[str, int] | None:
        try:
            return await asyncio.to_thread(read_xfrm_stat, self.options.netns)
        except NetnsGone:
            # No counters to show; the XFRM dump that follows fails and says why.
            return {}

    async def hooks(self) -> dict[str, PppHookRecord]:
        return await self._hooks.get()
