"""The error of every settings source: one line naming what is wrong."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting has a value the daemon cannot use; the message names the setting (its
    flag, or `FILE:LINE: KEY:` for a file)."""


class ConfigFileError(SettingsError):
    """A YAML file (configuration, probe modules, web configuration) cannot be used; the
    message is `FILE:LINE: KEY: message`."""
