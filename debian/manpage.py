#!/usr/bin/env python3
"""Write l2tp-ipsec-exporter(1) to stdout, from the --help and --version of the exporter
that was just built (run with the package's virtualenv python, at build time: see
debian/rules). help2man bolds dotted flags only up to the first dot and does not know
argparse's lowercase "usage:", hence this small generator.

    python3 debian/manpage.py PYTHON > l2tp-ipsec-exporter.1
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

PROG = "l2tp-ipsec-exporter"
FILES = [
    (
        "/etc/l2tp-ipsec-exporter/config.yml",
        "The configuration file: every setting at its default, commented "
        "(--config.file). Flags given on the command line win over it; SIGHUP re-reads it.",
    ),
    (
        "/etc/default/l2tp-ipsec-exporter",
        "ARGS: the flags the systemd unit passes (by default --config.file above).",
    ),
    (
        "/etc/ppp/ip-up.d/l2tp-ipsec-exporter, /etc/ppp/ip-down.d/l2tp-ipsec-exporter",
        "pppd hooks that record each ppp interface's user (in "
        "/run/l2tp-ipsec-exporter/ppp) for the per-client join and the per-login counters.",
    ),
    (
        "/lib/systemd/system/l2tp-ipsec-exporter.service",
        "The hardened unit, not enabled on install: systemctl enable --now l2tp-ipsec-exporter.",
    ),
]
SEE_ALSO = ["swanctl(8)", "pppd(8)", "xl2tpd(8)", "systemd.exec(5)", "sysusers.d(5)"]


def roff(text: str) -> str:
    """Text escaped for roff: backslashes, hyphens, and a leading . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def parse_help(help_text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the description paragraphs, [(flags, help)]) of argparse's --help."""
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "")  # after usage:
    description: list[str] = []
    options: list[tuple[str, str]] = []
    section = "description"
    for line in lines[start:]:
        if re.match(r"^\S.*:$", line):  # "options:", an argument group's title
            section = "options"
            continue
        if section == "description":
            description.append(line.strip())
            continue
        item = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if item:
            options.append((item.group(1), item.group(2) or ""))
        elif line.strip() and options:
            flags, text = options[-1]
            options[-1] = (flags, f"{text} {line.strip()}".strip())
    paragraphs = " ".join(description).strip()
    return paragraphs, options


def main() -> None:
    python = sys.argv[1]
    env = {**os.environ, "COLUMNS": "10000", "LC_ALL": "C.UTF-8"}
    command = [python, "-I", "-B", "-m", "exporter"]
    help_text = subprocess.run(
        [*command, "--help"], check=True, capture_output=True, text=True, env=env
    ).stdout
    version = subprocess.run(
        [*command, "--version"], check=True, capture_output=True, text=True, env=env
    ).stdout.split()[-1]
    description, options = parse_help(help_text)
    if len(options) < 10:
        sys.exit(f"manpage.py: only {len(options)} options parsed from --help")
    stamp = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%B %Y", time.gmtime(stamp))
    out = [
        f'.TH {PROG.upper()} 1 "{date}" "{PROG} {version}" "User Commands"',
        ".SH NAME",
        f"{roff(PROG)} \\- Prometheus exporter for L2TP/IPsec VPN servers",
        ".SH SYNOPSIS",
        f".B {roff(PROG)}",
        "[\\fIOPTION\\fR]...",
        ".br",
        f".B {roff(PROG)} demo",
        "[\\fIOPTION\\fR]...",
        ".SH DESCRIPTION",
        roff(description),
        ".SH OPTIONS",
    ]
    for flags, text in options:
        out += [".TP", f"\\fB{roff(flags)}\\fR", roff(text)]
    out.append(".SH FILES")
    for path, text in FILES:
        out += [".TP", f"\\fI{roff(path)}\\fR", roff(text)]
    out.append(".SH SEE ALSO")
    refs = [re.match(r"(.+)\((\d)\)", ref) for ref in SEE_ALSO]
    out.append(",\n".join(f".BR {roff(m.group(1))} ({m.group(2)})" for m in refs if m))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).exists():
        sys.exit(__doc__)
    main()
