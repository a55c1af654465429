"""Probe modules from the configuration file: its `probe` and `modules` keys, read with the
one YAML reader, so every error is the file's `FILE:LINE: KEY: message`."""

from __future__ import annotations

from exporter.config import Settings
from exporter.probes.config import ProbeSettings, has_probe_settings, probe_settings_from
from exporter.settings.yaml_file import read_yaml


def probe_settings_for(settings: Settings) -> ProbeSettings | None:
    """The probe modules of `settings.config_file`; None when it has none. A bad one raises
    `ConfigFileError` (a `SettingsError`)."""
    if not settings.config_file:
        return None
    doc = read_yaml(settings.config_file)
    if not has_probe_settings(doc):
        return None
    return probe_settings_from(doc, whole_file=False)
