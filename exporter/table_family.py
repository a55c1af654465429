"""A gauge or counter family kept as rows of label values, for the per-SA and per-user
families that grow with the number of users.

prometheus_client's families hold one `Sample` (a named tuple with a label dict) per
series; at thousands of users building those and then reading the dicts back costs more
than everything else in a scrape. A `TableFamily` keeps `(label values, value)` rows with
one label-name tuple for the whole family, and `exporter.exposition` writes the rows
straight to text; the privacy filter turns rows into rows. It is still a `Metric`:
anything else that reads `samples` (prometheus_client's own writer in the tests) gets
them, built on demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

Row = tuple[tuple[str, ...], float]

_SAMPLE_SUFFIX = {"counter": "_total", "gauge": ""}


class TableFamily(Metric):
    def __init__(self, name: str, documentation: str, typ: str, labels: Sequence[str]) -> None:
        if typ not in _SAMPLE_SUFFIX:
            raise ValueError(f"a TableFamily is a gauge or a counter, not {typ!r}")
        if name.endswith("_total"):
            raise ValueError("a counter's family name goes without _total")
        self.rows: list[Row] = []
        super().__init__(name, documentation, typ)
        self.labels = tuple(labels)
        self.sample_name = name + _SAMPLE_SUFFIX[typ]

    def add(self, values: tuple[str, ...], value: float) -> None:
        self.rows.append((values, value))

    def extend(self, rows: Iterable[Row]) -> None:
        self.rows.extend(rows)

    @property
    def samples(self) -> list[Sample]:
        return self._samples_of_rows()

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        # Metric.__init__ sets an empty list; rows are the only way in after that.
        if value:
            raise TypeError("a TableFamily takes rows through add()")

    def _samples_of_rows(self) -> list[Sample]:
        names = self.labels
        return [
            Sample(self.sample_name, dict(zip(names, values, strict=True)), value)
            for values, value in self.rows
        ]


class CreatedCounterTable(TableFamily):
    """A counter table whose series may carry their creation time, written as
    `CounterMetricFamily.add_metric(..., created=...)` writes it: a `_created` sample after
    each `_total` one (OpenMetrics), or a `_created` gauge family after the counter's (text
    0.0.4). `created` runs beside `rows`: one entry per row, None for a series without
    one."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, "counter", labels)
        self.created: list[float | None] = []
        self.created_name = name + "_created"

    def add(self, values: tuple[str, ...], value: float, created: float | None = None) -> None:
        self.rows.append((values, value))
        self.created.append(created)

    def extend(self, rows: Iterable[Row]) -> None:
        raise TypeError("a CreatedCounterTable takes rows through add(), with their created")

    def _samples_of_rows(self) -> list[Sample]:
        names = self.labels
        out = []
        for (values, value), created in zip(self.rows, self.created, strict=True):
            labels = dict(zip(names, values, strict=True))
            out.append(Sample(self.sample_name, labels, value))
            if created is not None:
                out.append(Sample(self.created_name, labels, created))
        return out


def gauge_table(name: str, documentation: str, labels: Sequence[str]) -> TableFamily:
    return TableFamily(name, documentation, "gauge", labels)


def counter_table(name: str, documentation: str, labels: Sequence[str]) -> TableFamily:
    return TableFamily(name, documentation, "counter", labels)
