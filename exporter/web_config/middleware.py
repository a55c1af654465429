"""The aiohttp middleware in front of every endpoint: allowed client certificate SANs
(403), basic auth (401 with WWW-Authenticate, 429 when too many checks wait) and the
configured response headers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter.web_config.basic_auth import BasicAuth, Verdict

REALM = "l2tp-ipsec-exporter"


def guard(
    users: Mapping[str, bytes], allowed_sans: Iterable[str], headers: Mapping[str, str]
) -> Middleware:
    """A middleware for these settings, with a fresh verification cache."""
    auth = BasicAuth(users) if users else None
    sans = frozenset(allowed_sans)
    extra_headers = dict(headers)

    @web.middleware
    async def web_config_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _guarded(request, handler, auth, sans)
        except web.HTTPException as exc:
            exc.headers.update(extra_headers)
            raise
        response.headers.update(extra_headers)
        return response

    return web_config_middleware


async def _guarded(
    request: web.Request,
    handler: Handler,
    auth: BasicAuth | None,
    allowed_sans: frozenset[str],
) -> web.StreamResponse:
    if allowed_sans and not _peer_san_allowed(request, allowed_sans):
        return web.Response(status=403, text="client certificate not allowed\n")
    if auth is not None:
        verdict = await auth.check(request.headers.get("Authorization"))
        if verdict is Verdict.BUSY:
            return web.Response(status=429, text="too many authentication attempts\n")
        if verdict is not Verdict.OK:
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
    return await handler(request)


def _peer_san_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return False
    sans = {value for _kind, value in cert.get("subjectAltName", ())}
    return not sans.isdisjoint(allowed)
