"""Command line in the Prometheus exporter convention (--web.listen-address, …)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from exporter import __version__
from exporter.config import (
    DEFAULT_PORT,
    DEFAULT_VICI_SOCKET,
    ListenAddress,
    Settings,
    SettingsError,
    parse_duration,
    parse_vici_socket,
)
from exporter.config_file import read_document, settings_from_document
from exporter.daemon import StartupError, serve
from exporter.kernel.netlink import netns_problem
from exporter.kernel.options import add_kernel_flags
from exporter.logs import setup_logging
from exporter.probe_config import probe_settings_for
from exporter.web_config import load_web_config

PROG = "l2tp-ipsec-exporter"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and exit code 2, without the usage dump argparse adds.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _seconds(text: str) -> float:
    # The config file's grammar (10s, 500ms, 5m, 1h, a plain number): one set of refusals.
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _non_negative_float(text: str) -> float:
    return _seconds(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI). "
        "`l2tp-ipsec-exporter demo --help`: run it against a real charon lab. "
        "A DURATION is 10s, 500ms, 5m, 1h or a number of seconds.",
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
        metavar="DURATION",
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
        metavar="DURATION",
        help="an SA replaced by the same peer within this time was reauthenticated, not "
        "dropped; drops are counted this much later (default 10)",
    )
    parser.add_argument(
        "--collector.strongswan.user-idle-timeout",
        dest="user_idle_seconds",
        type=_positive_float,
        default=3600.0,
        metavar="DURATION",
        help="forget the traffic totals of a user without SAs after this long (default 3600)",
    )
    parser.add_argument(
        "--collector.strongswan.refresh-interval",
        dest="refresh_interval",
        type=_non_negative_float,
        metavar="DURATION",
        help="ask charon the cheap questions (stats, connections, pools, certificates, "
        "counters) in the background this often; scrapes never wait on charon; 0 = ask "
        "everything, list-sas included, at every scrape (default 10)",
    )
    parser.add_argument(
        "--collector.strongswan.max-sas",
        dest="max_sas",
        type=_positive_int,
        metavar="N",
        help="most IKE SAs the SA model and the traffic ledger track; SAs announced by "
        "events beyond it are counted in strongswan_sas_untracked_total (default 10000)",
    )
    add_kernel_flags(parser)
    parser.add_argument(
        "--collector.strongswan.sa-refresh-interval",
        dest="sa_refresh_interval",
        type=_positive_float,
        metavar="DURATION",
        help="ask charon for list-sas (CHILD SA byte counts, reconciling the SA model) in "
        "the background this often; events keep SAs current in between (default 120)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="serve POST /-/reload (as Prometheus' flag of the same name); SIGHUP always "
        "reloads (default off)",
    )
    parser.add_argument(
        "--web.header-timeout",
        dest="header_timeout",
        type=_positive_float,
        metavar="DURATION",
        help="time a client has to send a complete request line and headers (default 5)",
    )
    parser.add_argument(
        "--web.idle-timeout",
        dest="idle_timeout",
        type=_positive_float,
        metavar="DURATION",
        help="close a keep-alive connection idle this long between requests (default 60)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_positive_int,
        metavar="N",
        help="most HTTP client connections open at once; more are closed at once (default 512)",
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
    parser.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        help="YAML configuration file (settings, probe modules, privacy); flags given on "
        "the command line win over it; reloaded on SIGHUP and POST /-/reload",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and exit",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth, in the Prometheus exporter-toolkit web config format",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


@dataclass(frozen=True)
class CommandLine:
    settings: Settings
    #: The flags given explicitly: they win over the config file, also after a reload.
    flags: Mapping[str, Any]
    config_check: bool = False

    def reload_settings(self) -> Settings:
        """What a reload runs with: the config file read again, these flags on top (the
        daemon's settings loader, handed to it by `main`)."""
        return load_settings(self.settings.config_file, self.flags)


def apply_flags(base: Settings, flags: Mapping[str, Any]) -> Settings:
    """`base` (built-in defaults or the config file) with the explicit flags on top."""
    ss = base.strongswan
    strongswan = dataclasses.replace(
        ss,
        **{k: flags[k] for k in _STRONGSWAN_FLAGS if k in flags},
    )
    kernel = dataclasses.replace(
        base.kernel,
        **{field: flags[flag] for flag, field in _KERNEL_FLAGS.items() if flag in flags},
    )
    if "sessions_state_dir" in flags:
        kernel = dataclasses.replace(kernel, state_dir=Path(flags["sessions_state_dir"]))
    # One series limit for every per-SA, per-user and per-session family.
    kernel = dataclasses.replace(kernel, series_limit=strongswan.series_limit)
    web_limits = dataclasses.replace(
        base.web_limits, **{k: flags[k] for k in _WEB_LIMIT_FLAGS if k in flags}
    )
    changes: dict[str, Any] = {
        "strongswan": strongswan,
        "kernel": kernel,
        "web_limits": web_limits,
    }
    if "listen_address" in flags:
        changes["listen_address"] = ListenAddress.parse(flags["listen_address"])
    if "vici_socket" in flags:
        changes["vici_socket"] = parse_vici_socket(flags["vici_socket"])
    if "web_config_file" in flags:
        changes["web_config_file"] = flags["web_config_file"]
    for key in ("telemetry_path", "vici_timeout", "log_level", "log_format", "enable_lifecycle"):
        if key in flags:
            changes[key] = flags[key]
    return dataclasses.replace(base, **changes)


_KERNEL_FLAGS = {
    "collector_ppp": "ppp",
    "collector_l2tp": "l2tp",
    "collector_xfrm": "xfrm",
    "collector_sessions": "sessions",
    "ppp_interfaces": "ppp_interfaces",
    "kernel_netns": "netns",
}

_STRONGSWAN_FLAGS = (
    "refresh_interval",
    "sa_refresh_interval",
    "sa_details",
    "user_metrics",
    "series_limit",
    "events",
    "reauth_grace",
    "user_idle_seconds",
    "max_sas",
)

_WEB_LIMIT_FLAGS = ("header_timeout", "idle_timeout", "max_connections")


def load_settings(config_file: str | None, flags: Mapping[str, Any]) -> Settings:
    """Settings from the config file (if any) and the flags; raises SettingsError."""
    base = Settings()
    if config_file:
        base = settings_from_document(read_document(config_file))
    settings = apply_flags(base, flags)
    _check_netns(settings, config_file, from_flag="kernel_netns" in flags)
    return settings


def _check_netns(settings: Settings, config_file: str | None, *, from_flag: bool) -> None:
    """A missing namespace is refused now (start, reload), never created later."""
    netns = settings.kernel.netns
    problem = netns_problem(netns) if netns else None
    if netns and problem:
        where = (
            "--collector.kernel.netns" if from_flag else f"{config_file}: collectors.kernel.netns"
        )
        raise SettingsError(f"{where} {netns!r}: {problem}")


def parse_command_line(argv: Sequence[str] | None = None) -> CommandLine:
    """Parse and validate the command line (and the config file it names); exits 2 on
    bad input, with one line naming the flag, key or file."""
    parser = build_parser()
    for action in parser._actions:
        # Absent flags must not override the config file: only given ones appear.
        if action.dest not in ("help", "version"):
            action.default = argparse.SUPPRESS
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config_file", None)
    config_check = bool(args.pop("config_check", False))
    try:
        settings = load_settings(config_file, args)
        if settings.web_config_file:
            load_web_config(settings.web_config_file)  # a bad file stops us now
        if config_file:
            probe_settings_for(settings)  # validated now, not at the first probe
    except SettingsError as err:
        parser.error(str(err))
    return CommandLine(settings, args, config_check)


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    return parse_command_line(argv).settings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        # Imported here for start-up cost: the demo brings the lab (network namespaces,
        # charon, Prometheus helpers), which only this subcommand uses. The Docker image
        # leaves the demo out (.dockerignore): say so rather than print a traceback.
        try:
            from exporter.demo.run import run_demo
        except ModuleNotFoundError as err:
            if err.name not in ("exporter.demo", "exporter.demo.run"):
                raise
            print(
                "l2tp-ipsec-exporter: demo: not part of this installation (the Docker image "
                "leaves it out); run it from `pip install l2tp-ipsec-exporter` on a machine "
                "with strongSwan",
                file=sys.stderr,
            )
            return 2
        return run_demo(args[1:])
    command_line = parse_command_line(args)
    settings = command_line.settings
    if command_line.config_check:
        print(f"{settings.config_file or 'the command line'}: configuration is valid")
        return 0
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, load_settings=command_line.reload_settings))
    except StartupError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
