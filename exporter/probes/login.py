"""Placeholder."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from exporter.probes.base import Target
from exporter.probes.config import Module


async def probe(
    target: Target,
    module: Module,
    registry: CollectorRegistry,
    log: logging.Logger,
    deadline: float,
) -> bool:
    return False
