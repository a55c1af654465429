"""prometheus_client's own exposition writer, the reference the exporter's writer is held to."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import Metric


class Families:
    """The minimal registry shape `prometheus_client`'s exposition functions read."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Sequence[Metric]:
        return self._families
