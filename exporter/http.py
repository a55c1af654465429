"""The HTTP side: /metrics with content negotiation, health endpoints, a landing page,
the live session page (/sessions)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from html import escape
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import Metric

from exporter import __version__
from exporter.config import SettingsError
from exporter.exposition import encode, negotiate
from exporter.logins.model import LoginsView
from exporter.privacy import PrivacyFilter
from exporter.scrape import Scraper
from exporter.sessions_page import HEADERS as SESSIONS_HEADERS
from exporter.sessions_page import render_html, render_json

log = logging.getLogger("exporter")

SCRAPER_KEY = web.AppKey("scraper", Scraper)
#: Re-reads the configuration; raises SettingsError (with the reason) to reject it.
RELOAD_KEY: web.AppKey[Callable[[], Awaitable[str]]] = web.AppKey("reload")
#: Whether the lifecycle endpoints (POST /-/reload) are on: --web.enable-lifecycle, read at
#: each request so a reload of the configuration file can change it.
LIFECYCLE_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("lifecycle")

LIFECYCLE_OFF = (
    "Lifecycle API is not enabled: start the exporter with --web.enable-lifecycle to "
    "reload over HTTP, or send it SIGHUP.\n"
)

#: The current logins (the login tracker's view); absent when the page is off.
SESSIONS_KEY: web.AppKey[Callable[[], Awaitable[LoginsView]]] = web.AppKey("sessions")
#: The privacy settings the page applies; absent: the scraper's, read at each request (so
#: a reload that changes them changes the page and /metrics together).
PRIVACY_KEY = web.AppKey("privacy", PrivacyFilter)

SESSIONS_OFF = "The session page is off (--web.sessions / --collector.users).\n"

LANDING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>l2tp-ipsec-exporter</title></head>
<body>
<h1>l2tp-ipsec-exporter {version}</h1>
<p>Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI).</p>
<ul>
<li><a href="{metrics}">{metrics}</a>: metrics</li>
<li>{sessions}</li>
<li><a href="/-/healthy">/-/healthy</a>: liveness</li>
<li><a href="/-/ready">/-/ready</a>: readiness</li>
<li>{reload}</li>
</ul>
</body>
</html>
"""


class RenderCache:
    """Encoded answers of the latest collection, per format: scrapers that share one
    collection also share its rendering, the costly part at thousands of series."""

    def __init__(self) -> None:
        self._families: object = None
        self._bodies: dict[tuple[str, bool], tuple[bytes, dict[str, str]]] = {}

    def get(
        self, families: list[Metric], accept: str | None, accept_encoding: str | None
    ) -> tuple[bytes, dict[str, str]]:
        if families is not self._families:
            self._families = families
            self._bodies = {}
        key = negotiate(accept, accept_encoding)
        if key not in self._bodies:
            self._bodies[key] = encode(families, *key)
        return self._bodies[key]


RENDER_KEY = web.AppKey("render-cache", RenderCache)


async def metrics(request: web.Request) -> web.Response:
    families = await request.app[SCRAPER_KEY].scrape()
    body, headers = request.app[RENDER_KEY].get(
        families, request.headers.get("Accept"), request.headers.get("Accept-Encoding")
    )
    return web.Response(body=body, headers=dict(headers))


def cross_origin(request: web.Request) -> str | None:
    """Why a browser sent this request on behalf of another site, or None. What Go's
    http.CrossOriginProtection checks: Sec-Fetch-Site (every current browser sends it),
    else an Origin whose host is not the Host asked for. Tools (curl, Prometheus' own
    reloaders) send neither and pass."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if urlsplit(origin).netloc.lower() == request.host.lower():
        return None
    return f"Origin: {origin}"


async def reload(request: web.Request) -> web.Response:
    if not request.app[LIFECYCLE_KEY]():
        return web.Response(status=403, text=LIFECYCLE_OFF)
    refused = cross_origin(request)
    if refused is not None:
        # A form on any web page could otherwise make a browser behind the firewall
        # reload the exporter.
        return web.Response(status=403, text=f"cross-origin request refused ({refused})\n")
    reloader = request.app.get(RELOAD_KEY)
    if reloader is None:
        return web.Response(status=404, text="reload is not available\n")
    try:
        message = await reloader()
    except SettingsError as err:
        return web.Response(status=400, text=f"reload rejected: {err}\n")
    return web.Response(text=f"{message}\n")


async def sessions_handler(request: web.Request) -> web.Response:
    provider = request.app.get(SESSIONS_KEY)
    if provider is None:
        return web.Response(status=404, text=SESSIONS_OFF)
    fmt = request.query.get("format", "html")
    if fmt not in ("html", "json"):
        return web.Response(status=400, text="format must be html or json\n")
    try:
        view = await provider()
    except Exception as err:  # the page is a view: it reports, the daemon goes on
        log.exception("the session page could not read the logins", extra={"err": str(err)})
        return web.Response(status=503, text="sessions are not available now; see the log\n")
    privacy = request.app.get(PRIVACY_KEY) or request.app[SCRAPER_KEY].privacy
    if fmt == "json":
        return web.Response(
            text=render_json(view, privacy), content_type="application/json",
            headers=SESSIONS_HEADERS,
        )  # fmt: skip
    return web.Response(
        text=render_html(view, privacy), content_type="text/html", headers=SESSIONS_HEADERS
    )


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="Ready\n")


def build_app(
    scraper: Scraper,
    telemetry_path: str,
    middlewares: Sequence[Middleware] = (),
    lifecycle: Callable[[], bool] = lambda: False,
    *,
    sessions: Callable[[], Awaitable[LoginsView]] | None = None,
    privacy: PrivacyFilter | None = None,
) -> web.Application:
    """`sessions`: the login tracker's view for /sessions (None: the page answers 404).
    `privacy`: what the page hides; None follows the scraper's (also after a reload)."""
    app = web.Application(middlewares=list(middlewares))
    app[SCRAPER_KEY] = scraper
    if sessions is not None:
        app[SESSIONS_KEY] = sessions
    if privacy is not None:
        app[PRIVACY_KEY] = privacy
    sessions_item = (
        '<a href="/sessions">/sessions</a>: who is connected now, the last ended sessions '
        '(<a href="/sessions?format=json">JSON</a>)'
        if sessions is not None
        else "/sessions: off (--web.sessions, --collector.users)"
    )
    app[RENDER_KEY] = RenderCache()
    app[LIFECYCLE_KEY] = lifecycle
    landings = {
        enabled: LANDING.format(
            version=escape(__version__),
            metrics=escape(telemetry_path),
            sessions=sessions_item,
            reload="POST /-/reload: re-read the configuration file"
            if enabled
            else "POST /-/reload: off (start with --web.enable-lifecycle); SIGHUP re-reads "
            "the configuration file",
        )
        for enabled in (False, True)
    }

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=landings[request.app[LIFECYCLE_KEY]()], content_type="text/html")

    app.router.add_get("/", index)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/sessions", sessions_handler)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    # POST and PUT, as Prometheus.
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app
