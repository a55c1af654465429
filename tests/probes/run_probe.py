"""Run one probe and print its exposition (and its log on stderr): for namespaces and guests.

    python tests/probes/run_probe.py MODULES.yml MODULE TARGET [TIMEOUT]

Exits 0 when the probe succeeded, 1 when it failed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from exporter.logs import setup_logging
from exporter.probes.base import parse_target
from exporter.probes.config import load_probe_settings
from exporter.probes.handler import PROBERS


async def main(config: str, name: str, target_text: str) -> bool:
    settings = load_probe_settings(config)
    module = settings.modules[name]
    registry = CollectorRegistry()
    log = logging.getLogger("exporter.probe")
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    target = parse_target(target_text, settings.allowed_targets)
    ok = await PROBERS[module.prober](target, module, registry, log, loop.time() + module.timeout)
    Gauge("probe_success", "Whether the probe succeeded", registry=registry).set(int(ok))
    Gauge("probe_duration_seconds", "Probe duration", registry=registry).set(
        time.monotonic() - start
    )
    sys.stdout.write(generate_latest(registry).decode())
    return ok


if __name__ == "__main__":
    setup_logging("debug", "logfmt")
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    sys.exit(0 if asyncio.run(main(*sys.argv[1:4])) else 1)
