"""An asyncio client for strongSwan's VICI protocol: `vici.protocol` encodes, our codec decodes."""

from exporter.vici.client import Backoff, ViciClient
from exporter.vici.connection import ViciConnection
from exporter.vici.errors import (
    ViciCommandError,
    ViciConnectionError,
    ViciError,
    ViciProtocolError,
)

__all__ = [
    "Backoff",
    "ViciClient",
    "ViciCommandError",
    "ViciConnection",
    "ViciConnectionError",
    "ViciError",
    "ViciProtocolError",
]
