"""`WebConfig`: one validated web configuration file, ready to serve with."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp.typedefs import Middleware

from exporter.web_config.middleware import guard
from exporter.web_config.tls import TlsServerConfig


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration; `WebConfig()` is the empty file (plain HTTP, open)."""

    path: Path | None = None
    tls: TlsServerConfig | None = None
    #: user → bcrypt hash
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    _context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server context for `web.TCPSite(ssl_context=...)`; None: plain HTTP."""
        return self._context

    def middleware(self) -> Middleware:
        """An aiohttp middleware for every endpoint: basic auth (401 with
        WWW-Authenticate), allowed client certificate SANs (403) and the configured
        headers. Each call makes a fresh verification cache."""
        allowed_sans = self.tls.client_allowed_sans if self.tls else ()
        return guard(self.users, allowed_sans, self.headers)
