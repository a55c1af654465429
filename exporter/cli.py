"""Command line in the Prometheus exporter convention (--web.listen-address, …)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from exporter import __version__
from exporter.config import SETTINGS, Settings, SettingsError
from exporter.config_file import read_document, settings_from_document
from exporter.daemon import StartupError, serve
from exporter.kernel.netlink import netns_problem
from exporter.logs import setup_logging
from exporter.probe_config import probe_settings_for
from exporter.settings.schema import Entry, replace_path
from exporter.settings.table import example_config, flag_table
from exporter.web_config import load_web_config

PROG = "l2tp-ipsec-exporter"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and exit code 2, without the usage dump argparse adds.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _flag_type(entry: Entry) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return entry.spec.kind.from_text(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = entry.spec.kind.metavar  # argparse names it in a few messages
    return convert


def _help(entry: Entry) -> str:
    default = entry.spec.kind.to_text(entry.default)
    if "(default" in entry.spec.help or not default:
        return entry.spec.help
    return f"{entry.spec.help} (default {default})"


def build_parser() -> argparse.ArgumentParser:
    """The flags: one per setting of the schema (`exporter.config.SETTINGS`), plus the
    ones about the configuration itself. Every absent flag is absent from the result
    (default SUPPRESS): what the command line did not say, the file or the default does."""
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for L2TP/IPsec VPN servers (strongSwan over VICI). "
        "`l2tp-ipsec-exporter demo --help`: run it against a real charon lab. "
        "A DURATION is 10s, 500ms, 5m, 1h or a number of seconds.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    for entry in SETTINGS:
        spec = entry.spec
        if spec.flag is None:
            continue
        if spec.kind.switch:
            parser.add_argument(
                spec.flag,
                dest=_dest(entry),
                action=argparse.BooleanOptionalAction,
                help=_help(entry),
            )
        else:
            parser.add_argument(
                spec.flag,
                dest=_dest(entry),
                type=_flag_type(entry),
                metavar=spec.kind.metavar,
                help=_help(entry),
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
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def readme_flag_table() -> str:
    """The README's table of flags: every setting's, then the ones about configuration."""
    other = [
        (action.option_strings[-1], action.help or "")
        for action in build_parser()._actions
        if action.dest in ("config_file", "config_check", "version", "help")
    ]
    return flag_table(SETTINGS, other)


#: The sections of the configuration file that are not settings of the schema.
_EXAMPLE_TAIL = """
# Label privacy (README, Privacy): keep | drop | hash, per label kind and per family.
# privacy:
#   users: keep
#   addresses: keep
#   hash_key_file: /etc/l2tp-ipsec-exporter/hash.key   # >= 16 random bytes, for `hash`
#   families:
#     strongswan_ike_sa_info: {users: hash, addresses: drop}

# Probe modules for /probe (docs/probes.md, examples/probes.yml).
# probe: {max_concurrent: 4, allowed_targets: [203.0.113.0/24]}
# modules:
#   vpn_ike: {prober: ike, timeout: 5s, ike: {version: 1}}
"""


def example_config_file() -> str:
    """examples/config.yml: every setting at its default, commented."""
    return example_config(SETTINGS, _EXAMPLE_TAIL)


def _dest(entry: Entry) -> str:
    return ".".join(entry.path)


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
    """`base` (built-in defaults or the config file) with the explicit flags on top;
    `flags` maps each given setting's field path (dotted) to its value."""
    settings = base
    for entry in SETTINGS:
        if _dest(entry) in flags:
            settings = replace_path(settings, entry.path, flags[_dest(entry)])
    return settings


def load_settings(config_file: str | None, flags: Mapping[str, Any]) -> Settings:
    """Settings from the config file (if any) and the flags; raises SettingsError."""
    base = Settings()
    if config_file:
        base = settings_from_document(read_document(config_file))
    settings = apply_flags(base, flags)
    _check_netns(settings, config_file, from_flag="kernel.netns" in flags)
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
