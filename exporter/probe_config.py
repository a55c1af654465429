"""Probe modules from the configuration file, validated with line numbers."""

from __future__ import annotations

import re

from exporter.config import Settings
from exporter.config_file import ConfigFileError, line_of, probe_section, read_document
from exporter.probes.config import ProbeConfigError, ProbeSettings, parse_probe_settings

_KEY = re.compile(r"^(?:[^:]+: )?([A-Za-z0-9_.\\-]+):")


def probe_settings_for(settings: Settings) -> ProbeSettings | None:
    """The probe modules of `settings.config_file`; None when it has none."""
    if not settings.config_file:
        return None
    doc = read_document(settings.config_file)
    section = probe_section(doc)
    if section is None:
        return None
    try:
        return parse_probe_settings(dict(section), doc.path)
    except ProbeConfigError as err:
        message = str(err).removeprefix(f"{doc.path}: ")
        match = _KEY.match(message)
        line = line_of(doc, match.group(1)) if match else None
        where = f"{doc.path}:{line}" if line else doc.path
        raise ConfigFileError(f"{where}: {message}") from None
