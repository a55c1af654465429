"""`LiveWebConfig`: the web configuration a running daemon serves with, swapped on reload."""

from __future__ import annotations

import dataclasses
import ssl

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.web_config.config import WebConfig
from exporter.web_config.tls import TlsServerConfig


class LiveWebConfig:
    """The web configuration a running daemon serves with, replaceable on reload.

    Like exporter-toolkit, which reads its file at every request: after `replace`, users,
    headers and allowed client SANs apply to the next request, and the server certificate
    and key to the next connection. The other TLS settings (on/off, client_auth_type,
    client CA, versions, cipher suites) stay as they were until a restart: OpenSSL keeps
    them from the context a connection started on.
    """

    def __init__(self, config: WebConfig) -> None:
        self._config = config
        self._middleware = config.middleware()
        self._context = config.ssl_context()
        if self._context is not None:
            # Every handshake starts on this context; the callback moves it to the
            # current configuration's certificate (it runs with or without SNI).
            self._context.sni_callback = self._pick_context

    @property
    def config(self) -> WebConfig:
        return self._config

    def replace(self, new: WebConfig) -> list[str]:
        """Serve with `new`; returns the keys whose change waits for a restart."""
        pending = _tls_restart_keys(self._config.tls, new.tls)
        if "tls_server_config" in pending:
            # Keep serving with the running TLS settings, certificate included.
            new = dataclasses.replace(new, tls=self._config.tls, _context=self._context)
        self._config = new
        self._middleware = new.middleware()
        return pending

    def _pick_context(
        self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        current = self._config.ssl_context()
        if current is not None:
            connection.context = current

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._context

    def middleware(self) -> Middleware:
        @web.middleware
        async def live_web_config_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            return await self._middleware(request, handler)

        return live_web_config_middleware


def _tls_restart_keys(old: TlsServerConfig | None, new: TlsServerConfig | None) -> list[str]:
    if (old is None) != (new is None):
        return ["tls_server_config"]
    if old is None or new is None:
        return []
    live = {"cert_file", "key_file", "client_allowed_sans"}
    return [
        f"tls_server_config.{f.name}"
        for f in dataclasses.fields(TlsServerConfig)
        if f.name not in live and getattr(old, f.name) != getattr(new, f.name)
    ]
