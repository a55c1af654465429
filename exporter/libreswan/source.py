"""pluto as a source: one round of `ipsec` commands with the running settings."""

from __future__ import annotations

from exporter.libreswan.commands import IpsecRunner
from exporter.libreswan.fetch import ask_pluto, ask_traffic
from exporter.libreswan.model import PlutoSnapshot
from exporter.libreswan.options import LibreswanOptions


class PlutoSource:
    """`await source()` asks pluto one round; `options` may be replaced on a reload (the
    timeout applies live, the paths need a restart and keep their running values)."""

    def __init__(self, options: LibreswanOptions) -> None:
        self.options = options

    async def __call__(self) -> PlutoSnapshot:
        o = self.options
        return await ask_pluto(
            IpsecRunner(ipsec=o.ipsec, ctl_socket=o.ctl_socket, timeout=o.timeout)
        )

    async def traffic(self, previous: PlutoSnapshot) -> PlutoSnapshot:
        """A quick round: trafficstatus alone, the rest from `previous`."""
        return await ask_traffic(self._runner(), previous)

    def _runner(self) -> IpsecRunner:
        o = self.options
        return IpsecRunner(ipsec=o.ipsec, ctl_socket=o.ctl_socket, timeout=o.timeout)
