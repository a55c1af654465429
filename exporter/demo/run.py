"""`l2tp-ipsec-exporter demo`: the exporter at work on a real charon, in one command.

A charon "server" with an NYC-Mesh-like remote-access connection (IKEv1 PSK + XAuth) and
an IKEv2 one runs in a network namespace; a few real client charons connect, pass a little
traffic now and then, and now and then drop (terminated or killed, found by DPD) and come
back, so drop counters and rates move. The exporter serves its metrics for that server;
`--with-prometheus` adds a Prometheus on loopback with the project's alert rules.
Ctrl-C or SIGTERM tears everything down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from exporter.config import (
    ListenAddress,
    Settings,
    SettingsError,
    StrongswanOptions,
    ViciAddress,
)
from exporter.daemon import serve
from exporter.demo.lab import Lab, requirements
from exporter.demo.lab.configs import ConnName
from exporter.demo.lab.prometheus import PrometheusServer, scrape_config
from exporter.logs import setup_logging

log = logging.getLogger("exporter.demo")
CLIENTS: list[ConnName] = ["nycmesh", "nycmesh", "nycmesh", "ikev2-psk", "ikev2-psk"]
#: Where the project's alert rules are: beside the package in a checkout (editable
#: install), or in the current directory (the README runs the demo from the checkout).
RULES_DIRS = (Path(__file__).resolve().parents[2] / "alerts", Path.cwd() / "alerts")


def rule_files() -> list[str]:
    for folder in RULES_DIRS:
        found = sorted(str(p) for p in folder.glob("*.rules.yml"))
        if found:
            return found
    return []


class DemoError(Exception):
    """The demo cannot run here; the message says why and what to do."""


def check_machine(with_prometheus: bool) -> None:
    if os.geteuid() != 0:
        raise DemoError(
            "the demo needs root: it creates network namespaces and veth links and runs "
            "charon daemons in them (run it with sudo, or as root)"
        )
    problems = requirements.problems(promtool=with_prometheus)
    if with_prometheus and shutil.which("prometheus") is None:
        problems.append("missing prometheus: apt-get install prometheus")
    if problems:
        raise DemoError("cannot start the demo lab: " + "; ".join(problems))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2tp-ipsec-exporter demo",
        description="Run the exporter against a real charon lab in network namespaces.",
    )
    parser.add_argument("--web.listen-address", dest="listen_address", default="127.0.0.1:9945")
    parser.add_argument(
        "--with-prometheus",
        action="store_true",
        help="also start Debian's prometheus on loopback with the project's alert rules",
    )
    parser.add_argument(
        "--churn-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often a client passes traffic, drops or reconnects (default 5)",
    )
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    return parser


class Churn:
    """Clients living their lives: traffic now and then, drops, reconnects."""

    def __init__(self, lab: Lab, interval: float, rng: random.Random) -> None:
        self.lab = lab
        self.interval = interval
        self.rng = rng
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.step()
            except Exception as err:  # a failed step is demo noise, not a reason to stop
                log.info("demo step failed", extra={"err": str(err)})

    def step(self) -> None:
        client = self.rng.choice(self.lab.clients)
        roll = self.rng.random()
        if not client.connected:
            if not client.charon.running():
                client.charon.restart(hard=True)
            client.connect(check=False)
            log.info("client reconnected", extra={"client": client.netns, "conn": client.conn})
        elif roll < 0.7:
            client.ping(count=self.rng.randint(1, 5))
        elif roll < 0.85:
            client.disconnect()
            log.info("client disconnected", extra={"client": client.netns, "conn": client.conn})
        else:
            client.charon.kill()  # the server finds out by DPD
            client.connected = False
            log.info("client killed", extra={"client": client.netns, "conn": client.conn})


async def _serve_until_signal(settings: Settings, urls: Sequence[str]) -> None:
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop))
    await asyncio.sleep(0.5)
    for url in urls:
        print(url, flush=True)
    await server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("info", "logfmt")
    try:
        listen = ListenAddress.parse(args.listen_address)
        check_machine(args.with_prometheus)
    except (SettingsError, DemoError) as err:
        print(f"l2tp-ipsec-exporter demo: error: {err}", file=sys.stderr)
        return 1

    # SIGTERM must unwind like Ctrl-C so the finally block tears the lab down (while the
    # daemon runs, its own handlers stop it cleanly instead).
    signal.signal(signal.SIGTERM, _interrupt)
    lab = Lab(CLIENTS, with_cert=True)
    prometheus: PrometheusServer | None = None
    churn: Churn | None = None
    try:
        lab.start()
        log.info("lab started", extra={"lab": lab.prefix, "workdir": str(lab.workdir)})
        settings = Settings(
            listen_address=listen,
            vici_socket=ViciAddress.parse(lab.server_uri),
            # A small server: list every SA often, so traffic moves on the graphs at once.
            strongswan=StrongswanOptions(sa_refresh_interval=5.0),
        )
        urls = [f"metrics: http://{listen}/metrics"]
        if args.with_prometheus:
            rules = rule_files()
            if not rules:
                log.warning("no alert rules found (run the demo from the checkout)")
            prometheus = PrometheusServer(scrape_config([str(listen)], "5s", rules)).start()
            urls.append(f"prometheus: {prometheus.url}")
        churn = Churn(lab, args.churn_interval, random.Random(args.seed))
        threading.Thread(target=churn.run, name="demo-churn", daemon=True).start()
        asyncio.run(_serve_until_signal(settings, urls))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut teardown
        if churn is not None:
            churn.stop.set()
        if prometheus is not None:
            with contextlib.suppress(Exception):
                prometheus.stop()
        lab.close()
        print("demo stopped; namespaces, daemons and files removed", flush=True)
    return 0
