"""A connected UDP socket for probes: datagrams and ICMP errors as awaitable results."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast


class UdpEndpoint(asyncio.DatagramProtocol):
    """Receives into a queue; an ICMP error (port unreachable) arrives as an exception."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(
        cls, remote: tuple[str, int], local: tuple[str, int] | None = None
    ) -> UdpEndpoint:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
        _, endpoint = await loop.create_datagram_endpoint(
            cls, remote_addr=remote, local_addr=local, family=family
        )
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not registered as a DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self._queue.put_nowait(exc)

    @property
    def local_address(self) -> tuple[str, int]:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def receive(self, timeout: float) -> bytes:
        """The next datagram; TimeoutError after `timeout`; OSError for an ICMP error."""
        async with asyncio.timeout(max(timeout, 0)):
            item = await self._queue.get()
        if isinstance(item, OSError):
            raise item
        return item

    def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
