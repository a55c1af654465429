#!/usr/bin/env python3
"""The exporter with the kernel collectors, for the guest, until the lead wires the flags.

Runs inside the vmlab guest (tests/vmlab/test_kernel_guest.py starts it over the control
channel): the strongSwan collector as the daemon builds it (events off) plus
`build_kernel_collectors(...)`, served by the daemon's own HTTP app. The sessions join
reads the strongSwan collector's latest snapshot through `StrongswanState.current()`, as
the daemon's wiring will (`lambda: runtime.state.current()`).

    python3 tests/vmlab/kernel_runner.py [--listen 0.0.0.0:9814] [kernel flags...]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from aiohttp import web

from exporter.collectors.strongswan import StrongswanCollector
from exporter.config import StrongswanOptions, ViciAddress
from exporter.http import build_app
from exporter.kernel.options import (
    add_kernel_flags,
    build_kernel_collectors,
    kernel_options,
)
from exporter.logs import setup_logging
from exporter.scrape import Scraper
from exporter.strongswan.state import StrongswanState
from exporter.vici import ViciClient


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0:9814")
    parser.add_argument("--vici", default="unix:///var/run/charon.vici")
    parser.add_argument("--series-limit", dest="series_limit", type=int, default=1000)
    add_kernel_flags(parser)
    args = parser.parse_args()
    setup_logging("info", "logfmt")
    client = ViciClient(ViciAddress.parse(args.vici), 5.0)
    options = StrongswanOptions(
        sa_details=True, events=False, series_limit=args.series_limit, refresh_interval=0.0
    )
    state = StrongswanState(client, None, options.refresh_interval)
    strongswan = StrongswanCollector(state, options)
    kernel = build_kernel_collectors(kernel_options(args), state.current)
    scraper = Scraper([strongswan, *kernel])
    runner = web.AppRunner(build_app(scraper, "/metrics"), access_log=None)
    await runner.setup()
    host, _, port = args.listen.rpartition(":")
    await web.TCPSite(runner, host, int(port)).start()
    print(f"kernel_runner listening on {args.listen}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
