"""References the exporter is held to: prometheus_client's own exposition writer, and the
privacy filter's per-sample path as it was before it learnt the row families."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as _openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from exporter.privacy import LABEL_KINDS, PrivacyOptions, Treatment, pseudonym

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


def privacy_per_sample(options: PrivacyOptions, families: Iterable[Metric]) -> list[Metric]:
    """`PrivacyFilter.apply` through samples for every family, row families included (its
    code before the row path, kept verbatim as the reference the row path is held to)."""
    if not options.active:
        return list(families)
    return [_per_sample_family(options, f) for f in families]


def _per_sample_family(options: PrivacyOptions, family: Metric) -> Metric:
    plan: dict[str, Treatment] = {}
    for kind, names in LABEL_KINDS.items():
        treatment = options.treatment(family.name, kind)
        if treatment != "keep":
            plan.update(dict.fromkeys(names, treatment))
    labels_seen = {k for s in family.samples for k in s.labels}
    if not plan or not labels_seen & set(plan):
        return family
    out = Metric(family.name, family.documentation, family.type, family.unit)
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in family.samples:
        labels: dict[str, str] = {}
        for name, value in sample.labels.items():
            treatment = plan.get(name, "keep")
            if treatment == "drop":
                continue
            labels[name] = pseudonym(options.hash_key, value) if treatment == "hash" else value
        key = (sample.name, tuple(sorted(labels.items())))
        if key not in merged:
            merged[key] = sample.value
        else:
            merged[key] = _per_sample_merge(family.name, merged[key], sample.value)
    for (sample_name, labels_items), merged_value in merged.items():
        out.add_sample(sample_name, dict(labels_items), merged_value)
    return out


def _per_sample_merge(family: str, a: float, b: float) -> float:
    if family.endswith("_timestamp_seconds"):
        return max(a, b)
    if family.endswith("_info"):
        return 1.0
    return a + b
