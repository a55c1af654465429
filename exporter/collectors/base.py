"""The one small interface every collector has, node_exporter style."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import Metric


@dataclass
class Collection:
    """What one collector produced in one scrape.

    `success` is False when the source could not be read; the collector may still have
    families to show (e.g. `strongswan_up 0`).
    """

    families: list[Metric] = field(default_factory=list)
    success: bool = True
    error: str = ""


class Collector(Protocol):
    name: str

    async def collect(self) -> Collection: ...
