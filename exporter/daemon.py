"""Wiring: settings → VICI client → collectors → scraper → HTTP server, until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from exporter import __version__
from exporter.collectors.strongswan import StrongswanCollector
from exporter.config import Settings
from exporter.http import build_app
from exporter.scrape import Scraper
from exporter.strongswan.events import EventStream
from exporter.strongswan.ledger import SaLedger
from exporter.vici import ViciClient

log = logging.getLogger("exporter")


class StartupError(Exception):
    """The daemon cannot start (e.g. the listen address is taken)."""


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    client = ViciClient(settings.vici_socket, settings.vici_timeout)
    options = settings.strongswan
    ledger = stream = None
    if options.events:
        ledger = SaLedger(
            reauth_grace=options.reauth_grace, user_idle_seconds=options.user_idle_seconds
        )
    collector = StrongswanCollector(client, options, ledger)
    if ledger is not None:
        # Its own connection: VICI carries one command at a time, and events arrive
        # whenever charon has them.
        stream = EventStream(
            settings.vici_socket, settings.vici_timeout, ledger, collector.reconcile
        )
        collector.attach_stream(stream)
    scraper = Scraper([collector])
    runner = web.AppRunner(build_app(scraper, settings.telemetry_path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_address.host, settings.listen_address.port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {settings.listen_address}: {err.strerror or err}"
        ) from err
    if stream is not None:
        stream.start()
    log.info(
        "listening",
        extra={
            "address": str(settings.listen_address),
            "telemetry_path": settings.telemetry_path,
            "vici_socket": str(settings.vici_socket),
            "version": __version__,
        },
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        if stream is not None:
            await stream.stop()
        await client.close()
