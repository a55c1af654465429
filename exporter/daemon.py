"""Wiring: settings → VICI client → collectors → scraper → HTTP server, until a signal.

`Runtime` owns the long-lived parts. A reload (SIGHUP, POST /-/reload) re-reads the
configuration file and applies what can change without a restart; the ledger (event and
traffic counters) and the event stream survive it, so no counter goes backwards.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from exporter import __version__
from exporter.collectors.join import IkeSnapshot
from exporter.collectors.kernel import build_kernel_collectors
from exporter.collectors.libreswan import LibreswanCollector
from exporter.collectors.strongswan import StrongswanCollector
from exporter.collectors.users import LoginTracker, UsersCollector
from exporter.config import SETTINGS, Settings, SettingsError
from exporter.fds import FdLimitError, ensure_fd_budget, fds_needed, quiet_accept_exhaustion
from exporter.http import RELOAD_KEY, build_app
from exporter.http_limits import ConnectionGate, LimitedSite, server_kwargs
from exporter.kernel.source import KernelSource
from exporter.libreswan.source import PlutoSource
from exporter.libreswan.view import PlutoView
from exporter.logs import HTTP_SERVER_LOG, setup_logging
from exporter.privacy import PrivacyFilter
from exporter.probe_config import probe_settings_for
from exporter.probes.config import ProbeSettings
from exporter.reload_status import ReloadStatus
from exporter.scrape import Scraper
from exporter.settings import schema
from exporter.strongswan.view import CharonView
from exporter.web_config import LiveWebConfig, load_web_config

log = logging.getLogger("exporter")

#: Builds the settings a reload applies (cli.main hands in one that reads the config file
#: again with the command line's flags on top); raises SettingsError. Injected, so the
#: daemon never imports the command line.
SettingsLoader = Callable[[], Settings]


def ike_daemons(settings: Settings) -> tuple[bool, bool]:
    """Which IKE daemons to read: (strongSwan, Libreswan), from their `mode` settings.
    `auto` looks at the sockets once, at start: Libreswan when pluto's control socket
    exists; strongSwan unless the server is a Libreswan one whose charon is absent."""
    libreswan = settings.libreswan
    pluto_there = _socket_there(libreswan.ctl_socket)
    libreswan_on = libreswan.mode == "on" or (libreswan.mode == "auto" and pluto_there)
    vici = settings.vici_socket
    vici_there = vici.scheme == "tcp" or _socket_there(Path(vici.path or ""))
    mode = settings.strongswan.mode
    strongswan_on = mode == "on" or (mode == "auto" and not (libreswan_on and not vici_there))
    return strongswan_on, libreswan_on


def _socket_there(path: Path) -> bool:
    """Whether a daemon's socket is there. A socket this user may not even look at (a
    directory on its path not searchable, as /run/pluto is to a user outside its group)
    counts as there: the daemon is installed, and its collector then reports that it
    cannot be read (``*_up 0``, one log line) instead of the exporter staying silent
    about it or failing to start."""
    try:
        path.stat()
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class StartupError(Exception):
    """The daemon cannot start (e.g. the listen address is taken)."""


class Runtime:
    def __init__(self, settings: Settings, load_settings: SettingsLoader | None = None) -> None:
        self.settings = settings
        # Without a loader (settings built in code: the demo, tests) there is nothing to
        # read again: a reload re-applies the running settings.
        self.load_settings = load_settings or (lambda: self.settings)
        options = settings.strongswan
        # charon's live view: the VICI client, the event stream, the SA table, the ledger.
        self.charon = CharonView(settings.vici_socket, settings.vici_timeout, options)
        # The scrape layer owns the series limiter; every collector that bounds series
        # gets it, so one limit applies and one family counts what it dropped.
        self.scraper = Scraper(
            privacy=PrivacyFilter(settings.privacy), series_limit=options.series_limit
        )
        # One reader of the kernel's tables: the kernel collectors, the login tracker and
        # the strongSwan collector (CHILD SA traffic from the XFRM states) share each dump
        # of a scrape.
        kernel_source = KernelSource(settings.kernel)
        self.collector = StrongswanCollector(
            self.charon, options, limiter=self.scraper.limiter, kernel=kernel_source
        )
        self.strongswan_on, libreswan_on = ike_daemons(settings)
        self.pluto: PlutoView | None = None
        self.libreswan: LibreswanCollector | None = None
        if libreswan_on:
            self.pluto_source = PlutoSource(settings.libreswan)
            self.pluto = PlutoView(self.pluto_source, ask_traffic=self.pluto_source.traffic)
            self.libreswan = LibreswanCollector(
                self.pluto, settings.libreswan, limiter=self.scraper.limiter
            )
        kernel = build_kernel_collectors(
            settings.kernel, self._ike_snapshot, limiter=self.scraper.limiter, source=kernel_source
        )
        if self.strongswan_on:
            self.scraper.add(self.collector)
        if self.libreswan is not None:
            self.scraper.add(self.libreswan)
        self.scraper.add(*kernel)
        # Per-login accounting: the users collector and the /sessions page read one tracker.
        self.logins: LoginTracker | None = None
        logins = settings.logins
        if logins.enabled or logins.page:
            self.logins = LoginTracker(
                kernel_source,
                self._ike_snapshot,
                logins,
                settings.kernel.state_dir,
            )
            if logins.enabled:
                self.scraper.add(
                    UsersCollector(self.logins, self.scraper.limiter, created=self._created)
                )
        self.probes = probe_settings_for(settings)
        # The configuration read at start is the first successful load.
        self.reload_status = ReloadStatus()
        self.scraper.add_own_metrics(self.reload_status)
        self.web: LiveWebConfig | None = None
        if settings.web_config_file:
            self.web = LiveWebConfig(load_web_config(settings.web_config_file))
        self._reload_lock = asyncio.Lock()

    def app(self, gate: ConnectionGate | None = None) -> web.Application:
        middlewares = [gate.middleware()] if gate is not None else []
        if self.web is not None:
            middlewares.append(self.web.middleware())
        app = build_app(
            self.scraper,
            self.settings.telemetry_path,
            middlewares,
            lifecycle=lambda: self.settings.enable_lifecycle,
            sessions=self.logins.view
            if self.logins is not None and self.settings.logins.page
            else None,
        )
        app[RELOAD_KEY] = self.reload
        if self.probes is not None:
            # Imported here for start-up cost: the probers and pycryptodome (~0.1 s) load
            # only when probe modules are configured.
            from exporter.probes.handler import add_probe_routes

            add_probe_routes(app, self._current_probes)
        return app

    async def reload(self) -> str:
        """Re-read the configuration; on error keep the running one, record the failure
        (`l2tp_ipsec_exporter_config_last_reload_successful` 0) and raise."""
        async with self._reload_lock:
            try:
                new = self.load_settings()
                probes = probe_settings_for(new)
                web_config = None
                path = self.settings.web_config_file
                if self.web is not None and path and new.web_config_file == path:
                    web_config = load_web_config(path)
            except SettingsError as err:
                self.reload_status.record(successful=False)
                log.error(
                    "reload rejected; keeping the running configuration",
                    extra={"err": str(err)},
                )
                raise
            self._apply(new, probes)
            if self.web is not None and web_config is not None:
                pending = self.web.replace(web_config)
                if pending:
                    log.warning(
                        "these web settings take effect at the next restart",
                        extra={"settings": ", ".join(pending)},
                    )
            self.reload_status.record(successful=True)
            log.info("configuration reloaded", extra={"config_file": new.config_file})
            return "configuration reloaded"

    def _apply(self, new: Settings, probes: ProbeSettings | None) -> None:
        """One mechanism: diff the new settings against the running ones through the
        schema, log what waits for a restart (it keeps its running value, so the next
        reload compares right), hand each part its new settings."""
        old = self.settings
        change = schema.diff(old, new, SETTINGS)
        restart_needed = [entry.spec.name for entry in change.restart]
        if self.probes is None and probes is not None:
            restart_needed.append("probe modules (none were loaded at start)")
        if restart_needed:
            log.warning(
                "these settings take effect at the next restart",
                extra={"settings": ", ".join(restart_needed)},
            )
        running = schema.keep_running(new, old, change.restart)
        self.settings = running
        if (running.log_level, running.log_format) != (old.log_level, old.log_format):
            setup_logging(running.log_level, running.log_format)
        self.charon.reconfigure_vici(running.vici_socket, running.vici_timeout)
        self.charon.reconfigure(running.strongswan)
        self.collector.reconfigure(running.strongswan)
        if self.libreswan is not None:
            self.pluto_source.options = running.libreswan
            self.libreswan.reconfigure(running.libreswan)
        self.scraper.set_series_limit(running.strongswan.series_limit)
        self.scraper.privacy = PrivacyFilter(running.privacy)
        if self.logins is not None:
            self.logins.reconfigure(running.logins)
        if self.probes is not None and probes is not None:
            self.probes = probes

    def _ike_snapshot(self) -> IkeSnapshot | None:
        """What the per-client join reads: charon's view, else pluto's."""
        if self.strongswan_on:
            snapshot = self.charon.current()
            if snapshot is not None:
                return snapshot
        return self.pluto.current() if self.pluto is not None else None

    def _created(self, family: str) -> bool:
        """Whether a per-login counter family carries `_created`: not when the privacy
        settings drop the user label (merged series have no one creation time)."""
        return self.scraper.privacy.options.treatment(family, "users") != "drop"

    def _current_probes(self) -> ProbeSettings:
        assert self.probes is not None  # routes are added only when modules are
        return self.probes

    def start(self) -> None:
        if self.strongswan_on:
            self.charon.start()
        if self.pluto is not None and self.settings.libreswan.events:
            self.pluto.follow_kernel(self.settings.kernel.netns)

    async def close(self) -> None:
        await self.charon.close()
        if self.pluto is not None:
            await self.pluto.close()


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    load_settings: SettingsLoader | None = None,
) -> None:
    stop = stop or asyncio.Event()
    runtime = Runtime(settings, load_settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(runtime)))

    quiet_accept_exhaustion(loop)
    probes = runtime.probes.max_concurrent if runtime.probes is not None else 0
    try:
        ensure_fd_budget(fds_needed(settings.web_limits, probes))
    except FdLimitError as err:
        await runtime.close()
        raise StartupError(str(err)) from err

    ssl_context = runtime.web.ssl_context() if runtime.web is not None else None

    def new_handler() -> asyncio.Protocol:
        assert runner.server is not None  # set up below, before the site listens
        return runner.server()

    gate = ConnectionGate(settings.web_limits, new_handler, ssl_context)
    runtime.scraper.add_own_metrics(gate)
    runner = web.AppRunner(
        runtime.app(gate),
        access_log=None,
        logger=HTTP_SERVER_LOG,
        **server_kwargs(settings.web_limits),
    )
    await runner.setup()
    site = LimitedSite(runner, settings.listen_address.host, settings.listen_address.port, gate)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        await runtime.close()
        raise StartupError(
            f"cannot listen on {settings.listen_address}: {err.strerror or err}"
        ) from err
    runtime.start()
    log.info(
        "listening",
        extra={
            "address": str(settings.listen_address),
            "telemetry_path": settings.telemetry_path,
            "vici_socket": str(settings.vici_socket),
            "tls": ssl_context is not None,
            "version": __version__,
        },
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        await runtime.close()


async def _reload(runtime: Runtime) -> None:
    """SIGHUP's reload: nothing may escape a task nobody awaits ("Task exception was
    never retrieved" and no reason)."""
    try:
        await runtime.reload()
    except SettingsError:
        pass  # logged by reload; the running configuration stays
    except Exception:
        log.exception("reload failed; keeping the running configuration")
