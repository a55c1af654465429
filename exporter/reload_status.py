"""Whether the last configuration reload worked, as blackbox_exporter exports it: a
rejected reload keeps the running configuration, and this is how Prometheus sees that."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class ReloadStatus(Collector):
    """`l2tp_ipsec_exporter_config_last_reload_successful` and
    `…_success_timestamp_seconds`; the configuration read at start counts as the first
    successful load."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.successful = True
        self.success_timestamp = clock()

    def record(self, successful: bool) -> None:
        self.successful = successful
        if successful:
            self.success_timestamp = self._clock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "l2tp_ipsec_exporter_config_last_reload_successful",
            "1 when the last configuration reload (or the load at start) worked; 0 when it "
            "was rejected and the exporter still runs the configuration before it.",
            value=1 if self.successful else 0,
        )
        yield GaugeMetricFamily(
            "l2tp_ipsec_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload).",
            value=self.success_timestamp,
        )
