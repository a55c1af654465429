"""The one error of the web configuration: a line naming the file, the key and what is wrong."""

from __future__ import annotations

from exporter.config import SettingsError


class WebConfigError(SettingsError):
    """The web configuration file cannot be used; the message names the file and key."""
