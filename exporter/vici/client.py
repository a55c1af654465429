"""The request side of VICI: one connection, reconnecting with backoff, a timeout per call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from exporter.vici.address import ViciAddress
from exporter.vici.codec import ViciMessage
from exporter.vici.connection import ViciConnection
from exporter.vici.errors import ViciConnectionError, ViciError, ViciProtocolError

log = logging.getLogger("exporter.vici")
T = TypeVar("T")


class Backoff:
    """Delays between connection attempts: doubling from `initial` up to `maximum`."""

    def __init__(self, initial: float = 0.25, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = 0.0

    def failed(self) -> float:
        self.delay = min(self.maximum, self.delay * 2 if self.delay else self.initial)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


class ViciClient:
    """Serialised VICI requests over one connection that is re-opened when it breaks.

    A failed connection attempt (or a connection dropped for a bad or missing answer) is
    not retried until the backoff delay has passed, so a missing socket costs a scrape
    nothing.
    """

    def __init__(
        self,
        address: ViciAddress,
        timeout: float,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._conn: ViciConnection | None = None
        self._lock = asyncio.Lock()
        self._next_attempt = 0.0
        self._last_error: str | None = None
        self._had_connection = False
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def _connection(self) -> ViciConnection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        now = self._clock()
        if now < self._next_attempt and self._last_error:
            raise ViciConnectionError(self._last_error)
        try:
            self._conn = await ViciConnection.open(self.address, self.timeout)
        except ViciConnectionError as err:
            self._fail(str(err))
            raise
        if self._had_connection:
            self.reconnects += 1
        self._had_connection = True
        if self._last_error:
            log.debug("VICI connection restored", extra={"socket": str(self.address)})
        self._last_error = None
        return self._conn

    def _fail(self, reason: str) -> None:
        # The caller reports the outage (once); here it is only a debug detail.
        log.debug("VICI connection failed", extra={"socket": str(self.address), "err": reason})
        self._last_error = reason
        self._next_attempt = self._clock() + self._backoff.failed()

    async def _drop(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._fail(reason)

    async def call(self, operation: Callable[[ViciConnection], Awaitable[T]]) -> T:
        """Run `operation` on the connection under the lock and the per-call timeout."""
        async with self._lock:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.timeout):
                    result = await operation(conn)
            except TimeoutError as err:
                # A late answer would be read as the answer to the next command.
                await self._drop(f"no answer within {self.timeout:g} s")
                raise ViciConnectionError(
                    f"charon did not answer within {self.timeout:g} s"
                ) from err
            except (ViciConnectionError, ViciProtocolError) as err:
                await self._drop(str(err))
                raise
            except ViciError:
                raise  # charon answered (and refused): the connection is in step
            except Exception as err:
                # Whatever broke (a caller's `each`), the answer may be half read.
                await self._drop(f"{type(err).__name__}: {err}")
                raise
            # Only an answer resets the delay, not a connect: a peer that accepts and then
            # sends garbage must not be asked again at once.
            self._backoff.reset()
            return result

    async def request(self, command: str, message: dict[str, Any] | None = None) -> ViciMessage:
        return await self.call(lambda conn: conn.request(command, message))

    async def streamed_request(
        self,
        command: str,
        event: str,
        message: dict[str, Any] | None = None,
        each: Callable[[ViciMessage], Any] | None = None,
    ) -> list[Any]:
        return await self.call(lambda conn: conn.streamed_request(command, event, message, each))

    def reconfigure(self, address: ViciAddress, timeout: float) -> None:
        """Use another socket or timeout from the next call on."""
        self.address = address
        self.timeout = timeout
        self._next_attempt = 0.0
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


__all__ = ["Backoff", "ViciClient", "ViciError"]
