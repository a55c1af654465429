"""The one error of the web configuration: `FILE:LINE: KEY: message`, as for every YAML
file the exporter reads."""

from __future__ import annotations

from exporter.settings.errors import ConfigFileError


class WebConfigError(ConfigFileError):
    """The web configuration file cannot be used; the message names the file, line and key."""
