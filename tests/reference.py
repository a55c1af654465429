"""prometheus_client's own exposition writer, the reference the exporter's writer is held to."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as _openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

# Typed views of the two functions prometheus_client leaves without annotations, so the
# tests call them in checked code (the same way exporter/exposition.py does).
openmetrics_latest: Callable[[Collector], bytes] = _openmetrics.generate_latest
floatToGoString: Callable[[float], str] = _untyped_float_to_go


class Families:
    """The minimal registry shape `prometheus_client`'s exposition functions read."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Sequence[Metric]:
        return self._families
