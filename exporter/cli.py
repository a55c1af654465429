"""Command line in the Prometheus exporter convention (--web.listen-address, …)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from exporter import __version__
from exporter.config import (
    DEFAULT_PORT,
    DEFAULT_VICI_SOCKET,
    ListenAddress,
    Settings,
    SettingsError,
    StrongswanOptions,
    ViciAddress,
)
from exporter.logs import setup_logging

PROG = "l2tp-ipsec-exporter"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and exit code 2, without the usage dump argparse adds.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI). "
        "`l2tp-ipsec-exporter demo --help`: run it against a real charon lab.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f":{DEFAULT_PORT}",
        metavar="[HOST]:PORT",
        help=f"address to serve metrics on (default :{DEFAULT_PORT})",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default /metrics)",
    )
    parser.add_argument(
        "--vici.socket",
        dest="vici_socket",
        default=DEFAULT_VICI_SOCKET,
        metavar="URI",
        help="charon's VICI socket: unix:///path or tcp://host:port "
        f"(default {DEFAULT_VICI_SOCKET})",
    )
    parser.add_argument(
        "--vici.timeout",
        dest="vici_timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="timeout of one VICI call (default 5)",
    )
    parser.add_argument(
        "--collector.strongswan.sa-details",
        dest="sa_details",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="export one series per IKE SA and CHILD SA (default off)",
    )
    parser.add_argument(
        "--collector.strongswan.user-metrics",
        dest="user_metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export strongswan_user_sessions per connection and user (default on)",
    )
    parser.add_argument(
        "--collector.strongswan.series-limit",
        dest="series_limit",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="most series of any per-SA or per-user family; the rest are counted in "
        "l2tp_ipsec_exporter_series_dropped_total (default 1000)",
    )
    parser.add_argument(
        "--collector.strongswan.events",
        dest="events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subscribe to charon's events: drop/rekey counters and traffic totals that "
        "survive rekeys (default on)",
    )
    parser.add_argument(
        "--collector.strongswan.reauth-grace",
        dest="reauth_grace",
        type=_non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="an SA replaced by the same peer within this time was reauthenticated, not "
        "dropped; drops are counted this much later (default 10)",
    )
    parser.add_argument(
        "--collector.strongswan.user-idle-timeout",
        dest="user_idle_seconds",
        type=_positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="forget the traffic totals of a user without SAs after this long (default 3600)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=["debug", "info", "warn", "error"],
        default="info",
        help="log level (default info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=["logfmt", "json"],
        default="logfmt",
        help="log format (default logfmt)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse the command line into validated settings; exits 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return Settings(
            listen_address=ListenAddress.parse(args.listen_address),
            telemetry_path=args.telemetry_path,
            vici_socket=ViciAddress.parse(args.vici_socket),
            vici_timeout=args.vici_timeout,
            log_level=args.log_level,
            log_format=args.log_format,
            strongswan=StrongswanOptions(
                sa_details=args.sa_details,
                user_metrics=args.user_metrics,
                series_limit=args.series_limit,
                events=args.events,
                reauth_grace=args.reauth_grace,
                user_idle_seconds=args.user_idle_seconds,
            ),
        )
    except SettingsError as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    from exporter.daemon import StartupError, serve

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        from exporter.demo import run_demo

        return run_demo(args[1:])
    settings = parse_settings(args)
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except StartupError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
