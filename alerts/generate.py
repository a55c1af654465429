#!/usr/bin/env python3
"""Render the Prometheus rule files from alerts/templates/ and alerts/thresholds.yml.

    python3 alerts/generate.py                       # rewrite alerts/*.rules.yml
    python3 alerts/generate.py --thresholds my.yml   # your values over the defaults
    python3 alerts/generate.py --out DIR             # write elsewhere (e.g. /etc/prometheus)
    python3 alerts/generate.py --check               # exit 1 if the committed files are stale

Templates are the rule files with ``[[section.key]]`` placeholders; a placeholder that names
no threshold, or a threshold no template uses, is an error (a typo must not go unnoticed).
Only the standard library and PyYAML are needed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
DEFAULTS = HERE / "thresholds.yml"
PLACEHOLDER = re.compile(r"\[\[([a-z0-9_]+(?:\.[a-z0-9_]+)*)\]\]")


class ThresholdError(ValueError):
    pass


def merge(base: Mapping[str, Any], override: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """`override` over `base`; keys unknown to `base` are errors (typos)."""
    out = dict(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            raise ThresholdError(f"unknown threshold {where!r}")
        if isinstance(base[key], Mapping):
            if not isinstance(value, Mapping):
                raise ThresholdError(f"{where!r} must be a mapping")
            out[key] = merge(base[key], value, f"{where}.")
        else:
            out[key] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def load_thresholds(override: Mapping[str, Any] | None = None) -> dict[str, str]:
    defaults = yaml.safe_load(DEFAULTS.read_text())
    return flatten(merge(defaults, override or {}))


def render(thresholds: Mapping[str, str]) -> dict[str, str]:
    """Rule file name -> text, for every template."""
    used: set[str] = set()
    files: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in thresholds:
            raise ThresholdError(f"template uses unknown threshold {key!r}")
        used.add(key)
        return thresholds[key]

    for template in sorted(TEMPLATES.glob("*.rules.yml")):
        text = PLACEHOLDER.sub(substitute, template.read_text())
        try:
            yaml.safe_load(text)  # a substituted value must not break the YAML
        except yaml.YAMLError as err:
            message = f"{template.name} is not valid YAML after substitution: {err}"
            raise ThresholdError(message) from None
        files[template.name] = text
    unused = set(thresholds) - used
    if unused:
        raise ThresholdError(f"thresholds no template uses: {sorted(unused)}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=Path, help="YAML with the values to change")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the rule files")
    parser.add_argument("--check", action="store_true", help="only compare with --out")
    args = parser.parse_args(argv)
    override = yaml.safe_load(args.thresholds.read_text()) if args.thresholds else None
    try:
        files = render(load_thresholds(override))
    except ThresholdError as err:
        print(f"generate.py: {err}", file=sys.stderr)
        return 2
    stale = []
    for name, text in files.items():
        target = args.out / name
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if stale:
        print("stale, run python3 alerts/generate.py: " + " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
