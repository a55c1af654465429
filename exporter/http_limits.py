"""What HTTP clients may hold of the exporter: connections, and time without a request.

aiohttp closes idle keep-alive connections (`keepalive_timeout`) but has no deadline for a
request's line and headers and no cap on connections: idle sockets used to pile up until
the process ran out of file descriptors and every endpoint stopped answering. The gate
sits between the listening socket and aiohttp's protocol:

- a cap on open client connections (TLS handshakes included). At the cap a new connection
  takes the place of an open one that is not busy with a request: the oldest that has
  sent nothing yet, else the longest idle keep-alive connection (its client reconnects),
  else the oldest with an incomplete request. Idle connections cannot lock Prometheus
  out: its request arrives with its connection. Only when every open connection is busy
  with a request is the new one closed at once.
- a header deadline from the accept (TLS handshake included) to a complete request line
  and headers, and again from the first byte of each later request on the connection.
- TLS is done here with `loop.start_tls`, not by `create_server(ssl=...)`: asyncio never
  tells the application protocol of a handshake that failed, so a count kept there leaks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config import WebLimits

log = logging.getLogger("exporter.http")

#: At most one line per this many seconds about connections refused at the cap.
LOG_INTERVAL = 60.0
#: The listen backlog: also how many connections one accept burst can hold before the
#: gate has closed the surplus (see exporter/fds.py).
BACKLOG = 128


class ConnectionGate:
    """Counts the open client connections and enforces the cap and the header deadline.

    `handler_factory` makes aiohttp's protocol for a connection (the runner's `Server`).
    The gate is also a prometheus_client collector for its own numbers.
    """

    def __init__(
        self,
        limits: WebLimits,
        handler_factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self._handler_factory = handler_factory
        self._open: set[GuardedConnection] = set()
        #: Open connections not busy with a request, oldest first (dicts keep order): those
        #: that sent nothing (or only a TLS handshake), keep-alive ones between requests,
        #: and those that sent part of a request.
        self._silent: dict[GuardedConnection, None] = {}
        self._idle: dict[GuardedConnection, None] = {}
        self._partial: dict[GuardedConnection, None] = {}
        self._by_handler: dict[asyncio.BaseProtocol, GuardedConnection] = {}
        self.rejected = 0
        self.evicted = 0
        self.header_timeouts = 0
        self._last_log = float("-inf")
        self._logged_at = (0, 0)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.BaseProtocol:
        """The protocol factory for `loop.create_server`: one call per accepted socket."""
        if len(self._open) >= self.limits.max_connections:
            victim = self._victim()
            if victim is not None:
                self.evicted += 1
                victim.drop()
            else:
                self.rejected += 1
                self._note_limit()
                return _Refused()
            self._note_limit()
        conn = GuardedConnection(self)
        self._open.add(conn)
        self._silent[conn] = None
        return conn

    def _victim(self) -> GuardedConnection | None:
        if self._silent:
            return next(iter(self._silent))
        for conn in self._idle:
            if conn.flushed():  # not while its last answer is still being sent
                return conn
        if self._partial:
            return next(iter(self._partial))
        return None

    def _note_limit(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last_log < LOG_INTERVAL:
            return
        last_evicted, last_rejected = self._logged_at
        log.warning(
            "HTTP connection limit reached: new connections take the place of open ones "
            "without a request in progress, or are refused while every connection is busy",
            extra={
                "max_connections": self.limits.max_connections,
                "evicted": self.evicted - last_evicted,
                "refused": self.rejected - last_rejected,
            },
        )
        self._last_log = now
        self._logged_at = (self.evicted, self.rejected)

    def _forget(self, conn: GuardedConnection) -> None:
        """No longer a candidate to make room (busy, or gone)."""
        self._silent.pop(conn, None)
        self._idle.pop(conn, None)
        self._partial.pop(conn, None)

    def _new_handler(self, conn: GuardedConnection) -> asyncio.Protocol:
        handler = self._handler_factory()
        self._by_handler[handler] = conn
        return handler

    def _release(self, conn: GuardedConnection) -> None:
        self._open.discard(conn)
        self._forget(conn)
        if conn.handler is not None:
            self._by_handler.pop(conn.handler, None)

    def middleware(self) -> Middleware:
        """Marks a connection busy while one of its requests is handled: the header
        deadline stops, and the connection is no longer the first to make room."""

        @web.middleware
        async def connection_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = self._by_handler.get(request.protocol)
            if conn is None:
                return await handler(request)
            conn.request_started()
            try:
                return await handler(request)
            finally:
                conn.request_finished()

        return connection_gate

    def close_pending(self) -> None:
        """At shutdown: drop what aiohttp does not know of yet (TLS handshakes)."""
        for conn in list(self._open):
            if conn.handler is None:
                conn.drop()

    # prometheus_client collector
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "l2tp_ipsec_exporter_http_connections",
            "HTTP client connections open now, TLS handshakes included.",
            value=len(self._open),
        )
        yield GaugeMetricFamily(
            "l2tp_ipsec_exporter_http_max_connections",
            "Most HTTP client connections open at once (--web.max-connections).",
            value=self.limits.max_connections,
        )
        yield CounterMetricFamily(
            "l2tp_ipsec_exporter_http_connections_rejected",
            "New HTTP connections closed at once: the cap was reached and every open "
            "connection was busy with a request.",
            value=self.rejected,
        )
        dropped = CounterMetricFamily(
            "l2tp_ipsec_exporter_http_connections_dropped",
            "Open HTTP connections the exporter closed: header_timeout = no complete "
            "request line and headers (TLS handshake included) within --web.header-timeout; "
            "evicted = at the cap, a connection without a request in progress made room for "
            "a new one.",
            labels=["reason"],
        )
        dropped.add_metric(["header_timeout"], self.header_timeouts)
        dropped.add_metric(["evicted"], self.evicted)
        yield dropped


class GuardedConnection(asyncio.Protocol):
    """One client connection: the header deadline, TLS, and aiohttp's protocol inside."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._raw: asyncio.Transport | None = None
        #: What aiohttp writes to: the raw transport, or the TLS one over it.
        self._app: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self._released = False
        self._tls: asyncio.Task[None] | None = None
        #: What SSLProtocol delivered between the handshake and start_tls returning (a
        #: client sends its request right after its Finished message).
        self._early: list[bytes] = []

    # -- asyncio.Protocol, on the raw TCP transport (or, once TLS is up, from SSLProtocol)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        if self._released:  # made room for a newer one before asyncio got here
            transport.abort()
            return
        self._arm()
        if self._gate.ssl_context is None:
            self._attach(transport)
        else:
            transport.pause_reading()  # nothing may reach us before start_tls takes over
            self._tls = asyncio.get_running_loop().create_task(self._start_tls(transport))

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            self._early.append(data)
            return
        if data and not self._busy and self._deadline is None:
            self._arm()  # the first byte of a next request: its headers have a deadline too
        if data and not self._busy and self not in self._gate._partial:
            self._gate._forget(self)
            self._gate._partial[self] = None  # a request has begun
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self.handler is not None:
            self.handler.connection_lost(exc)

    # -- the gate's side

    def request_started(self) -> None:
        self._busy = True
        self._disarm()
        self._gate._forget(self)

    def request_finished(self) -> None:
        self._busy = False
        if not self._released:
            self._gate._idle[self] = None

    def flushed(self) -> bool:
        """Everything written to the client has left (no answer half sent)."""
        transport = self._app
        return transport is None or transport.get_write_buffer_size() == 0

    def drop(self) -> None:
        """Close at once (RST-free abort: nothing is owed to a client without a request)."""
        self._release()
        if self._raw is not None:
            self._raw.abort()
        if self._tls is not None and self._tls is not asyncio.current_task():
            self._tls.cancel()  # a handshake in progress

    # -- inside

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        assert self._gate.ssl_context is not None
        if self._released:  # closed or made room before this task ran
            return
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,
                self,
                self._gate.ssl_context,
                server_side=True,
                ssl_handshake_timeout=self._gate.limits.header_timeout,
            )
        except Exception as err:  # whatever it is, it ends this connection only
            # A scanner, a plain-HTTP client or a client that gave up: not worth a line
            # above debug (the deadline counts the ones that stall).
            log.debug("TLS handshake failed", extra={"err": str(err) or type(err).__name__})
            self.drop()
            return
        if tls is None or self._released:  # closed while the handshake ran
            self.drop()
            return
        self._attach(tls)

    def _attach(self, transport: asyncio.Transport) -> None:
        self._app = transport
        self.handler = self._gate._new_handler(self)
        self.handler.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._gate.limits.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._busy or self._released:
            return
        self._gate.header_timeouts += 1
        self.drop()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._disarm()
        self._gate._release(self)


class _Refused(asyncio.Protocol):
    """Over the cap with every connection busy: closed as soon as asyncio hands it over."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class LimitedSite(web.TCPSite):
    """aiohttp's TCPSite with the gate as protocol factory (and doing TLS itself)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate) -> None:
        super().__init__(runner, host, port, ssl_context=gate.ssl_context, backlog=BACKLOG)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.gate, self._host, self._port, backlog=self._backlog
        )

    async def stop(self) -> None:
        self.gate.close_pending()
        await super().stop()


def server_kwargs(limits: WebLimits) -> dict[str, Any]:
    """What the AppRunner passes to aiohttp's protocol: the idle (keep-alive) timeout."""
    return {"keepalive_timeout": limits.idle_timeout}
