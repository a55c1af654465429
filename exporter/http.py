"""The HTTP side: /metrics with content negotiation, health endpoints, a landing page."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, Iterable, Sequence
from html import escape

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import exposition
from prometheus_client.core import Metric

from exporter import __version__
from exporter.config import SettingsError
from exporter.exposition import render_openmetrics, render_text
from exporter.scrape import Scraper

SCRAPER_KEY = web.AppKey("scraper", Scraper)
#: Re-reads the configuration; raises SettingsError (with the reason) to reject it.
RELOAD_KEY: web.AppKey[Callable[[], Awaitable[str]]] = web.AppKey("reload")

LANDING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>l2tp-ipsec-exporter</title></head>
<body>
<h1>l2tp-ipsec-exporter {version}</h1>
<p>Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI).</p>
<ul>
<li><a href="{metrics}">{metrics}</a>: metrics</li>
<li><a href="/-/healthy">/-/healthy</a>: liveness</li>
<li><a href="/-/ready">/-/ready</a>: readiness</li>
<li>POST /-/reload: re-read the configuration file</li>
</ul>
</body>
</html>
"""


def negotiate(accept: str | None, accept_encoding: str | None) -> tuple[str, bool]:
    """(content type, gzip?) for what the client asked: OpenMetrics or text 0.0.4."""
    _, content_type = exposition.choose_encoder(accept or "")
    return content_type, bool(accept_encoding and "gzip" in accept_encoding)


def encode(
    families: Sequence[Metric], content_type: str, gzipped: bool
) -> tuple[bytes, dict[str, str]]:
    if content_type.startswith("application/openmetrics-text"):
        body = render_openmetrics(families)
    else:
        body = render_text(families)
    headers = {"Content-Type": content_type}
    if gzipped:
        # Level 1: a quarter of level 6's time for a third more bytes (measured on a
        # 420 KB answer: 1.0 vs 4.2 ms, 31 vs 23 KB); at thousands of users it matters.
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def render_exposition(
    families: Iterable[Metric], accept: str | None, accept_encoding: str | None
) -> tuple[bytes, dict[str, str]]:
    """Encode for what the client asked: OpenMetrics or text 0.0.4, gzip when accepted."""
    return encode(list(families), *negotiate(accept, accept_encoding))


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


async def reload(request: web.Request) -> web.Response:
    reloader = request.app.get(RELOAD_KEY)
    if reloader is None:
        return web.Response(status=404, text="reload is not available\n")
    try:
        message = await reloader()
    except SettingsError as err:
        return web.Response(status=400, text=f"reload rejected: {err}\n")
    return web.Response(text=f"{message}\n")


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="Ready\n")


def build_app(
    scraper: Scraper, telemetry_path: str, middlewares: Sequence[Middleware] = ()
) -> web.Application:
    app = web.Application(middlewares=list(middlewares))
    app[SCRAPER_KEY] = scraper
    app[RENDER_KEY] = RenderCache()
    landing = LANDING.format(version=escape(__version__), metrics=escape(telemetry_path))

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=landing, content_type="text/html")

    app.router.add_get("/", index)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app
