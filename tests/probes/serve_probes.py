"""Serve /probe from a module file on a UNIX socket: run inside a lab namespace.

The socket file is visible from every network namespace, so a test in the root namespace
can send HTTP requests to probes that run (and send their packets) inside the lab.

    python tests/probes/serve_probes.py MODULES.yml SOCKET
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from exporter.logs import setup_logging
from exporter.probes.config import load_probe_settings
from exporter.probes.handler import add_probe_routes


async def main(config: str, socket_path: str) -> None:
    setup_logging("debug", "logfmt")
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    app = web.Application()
    add_probe_routes(app, load_probe_settings(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, socket_path).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
