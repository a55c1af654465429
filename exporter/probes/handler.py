"""GET /probe?target=HOST[:PORT]&module=NAME: one probe, its own registry, blackbox style.

The deadline is the module's timeout, shortened to Prometheus' scrape timeout (its
``X-Prometheus-Scrape-Timeout-Seconds`` header) less a margin, so the answer arrives
before Prometheus gives up. A semaphore bounds the probes that run at once.
``&debug=true`` returns the probe's log lines and metrics as plain text instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from exporter.exposition import render_exposition
from exporter.probes import ike, l2tp, login
from exporter.probes.base import Prober, Target, TargetError, check_target_port, parse_target
from exporter.probes.config import Module, ProbeSettings

PROBERS: dict[str, Prober] = {"ike": ike.probe, "l2tp": l2tp.probe, "login": login.probe}

#: Seconds kept free of the scrape timeout for encoding and the network (blackbox's
#: `--timeout-offset`).
TIMEOUT_OFFSET = 0.5
#: How long a prober may run past its deadline to tear down (the login prober's
#: StopCCN/terminate/unload) before the handler stops waiting.
TEARDOWN_GRACE = 15.0

#: The probe settings in force: a reload swaps what this returns while the app runs.
ProbeSettingsSource = Callable[[], ProbeSettings]
SETTINGS_KEY: web.AppKey[ProbeSettingsSource] = web.AppKey("probe_settings")
LIMIT_KEY = web.AppKey("probe_limit", asyncio.Semaphore)

base_log = logging.getLogger("exporter.probe")
_probe_ids = itertools.count(1)


def bad_request(message: str) -> web.Response:
    return web.Response(status=400, text=message + "\n")


def probe_deadline(module: Module, scrape_timeout: str | None, now: float) -> float:
    """Absolute loop time by which the probe must have its answer."""
    timeout = module.timeout
    if scrape_timeout:
        try:
            budget = float(scrape_timeout) - TIMEOUT_OFFSET
        except ValueError:
            budget = timeout
        if budget > 0:
            timeout = min(timeout, budget)
    return now + timeout


class _Capture(logging.Handler):
    """Keeps a probe's log lines for `debug=true`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        skip = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in skip)
        self.lines.append(f"{record.levelname.lower()} {record.getMessage()} {extras}".rstrip())


class _Context(logging.Filter):
    """Stamps every record of one probe with its module and target."""

    def __init__(self, module: str, target: str) -> None:
        super().__init__()
        self.module = module
        self.target = target

    def filter(self, record: logging.LogRecord) -> bool:
        record.probe_module = self.module
        record.target = self.target
        return True


def _probe_logger(module: Module, target: str, capture: _Capture | None) -> logging.Logger:
    # A free-standing Logger (not from getLogger): a cached one per probe would never be
    # freed. Records still flow up to the daemon's handlers through the parent.
    log = logging.Logger(f"exporter.probe.{next(_probe_ids)}")
    log.parent = base_log
    log.addFilter(_Context(module.name, target))
    if capture is not None:
        log.setLevel(logging.DEBUG)
        log.addHandler(capture)
    return log


async def _run(
    prober: Prober,
    request: web.Request,
    module: Module,
    target: Target,
    registry: CollectorRegistry,
    log: logging.Logger,
) -> bool:
    loop = asyncio.get_running_loop()
    deadline = probe_deadline(
        module, request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"), loop.time()
    )
    limit = request.app[LIMIT_KEY]
    try:
        async with asyncio.timeout_at(deadline):
            await limit.acquire()
    except TimeoutError:
        log.warning("probe not started: too many probes running")
        return False
    try:
        async with asyncio.timeout_at(deadline + TEARDOWN_GRACE):
            return await prober(target, module, registry, log, deadline)
    except TimeoutError:
        log.warning("prober overran its deadline")
        return False
    finally:
        limit.release()


async def probe_handler(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]()
    module_name = request.query.get("module", "")
    target_text = request.query.get("target", "")
    if not module_name:
        return bad_request("module parameter is missing")
    module = settings.modules.get(module_name)
    if module is None:
        return bad_request(f"unknown module {module_name!r}")
    if not target_text:
        return bad_request("target parameter is missing")
    try:
        target = parse_target(target_text, settings.allowed_targets)
        check_target_port(target_text, target, module)
    except TargetError as err:
        return bad_request(str(err))

    debug = request.query.get("debug", "").lower() in ("1", "true")
    capture = _Capture() if debug else None
    log = _probe_logger(module, target_text, capture)
    registry = CollectorRegistry(auto_describe=True)
    start = time.monotonic()
    success = await _run(PROBERS[module.prober], request, module, target, registry, log)
    duration = time.monotonic() - start
    Gauge("probe_success", "Whether the probe succeeded", registry=registry).set(
        1 if success else 0
    )
    Gauge("probe_duration_seconds", "How long the probe took to complete", registry=registry).set(
        duration
    )
    log.debug("probe done", extra={"success": success, "duration": round(duration, 6)})
    if capture is not None:
        body = render_exposition(registry.collect(), "text/plain", None)[0]
        text = "Logs for the probe:\n" + "\n".join(capture.lines) + "\n\nMetrics:\n"
        return web.Response(text=text + body.decode())
    payload, headers = render_exposition(
        registry.collect(),
        request.headers.get("Accept"),
        request.headers.get("Accept-Encoding"),
    )
    return web.Response(body=payload, headers=headers)


def add_probe_routes(app: web.Application, settings: ProbeSettings | ProbeSettingsSource) -> None:
    """Serve GET /probe on `app` for the modules in `settings` (fixed, or a function a
    reload makes return new ones; `max_concurrent` is taken once, here)."""
    source = settings if callable(settings) else (lambda: settings)
    app[SETTINGS_KEY] = source
    app[LIMIT_KEY] = asyncio.Semaphore(source().max_concurrent)
    app.router.add_get("/probe", probe_handler)
