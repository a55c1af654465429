"""Keeping personal data out of labels: VPN user names and public addresses.

Per label kind (`users`, `addresses`), and per metric family if needed, a label is kept,
dropped (series that then coincide are merged) or replaced by a keyed hash (HMAC-SHA256,
so nobody without the key can test a guessed name against it). Applied to every family
of a scrape, whichever collector made it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import Metric

from exporter.table_family import CreatedCounterTable, TableFamily

Treatment = Literal["keep", "drop", "hash"]

#: Which label names carry which kind of personal data.
LABEL_KINDS: dict[str, frozenset[str]] = {
    "users": frozenset({"user", "remote_id", "ike_user", "ppp_user", "identity"}),
    "addresses": frozenset(
        {"remote_host", "public_address", "peer_address", "src", "dst", "inner_address"}
    ),
}


@dataclass(frozen=True)
class PrivacyOptions:
    defaults: Mapping[str, Treatment] = field(
        default_factory=lambda: dict.fromkeys(LABEL_KINDS, "keep")
    )
    families: Mapping[str, Mapping[str, Treatment]] = field(default_factory=dict)
    hash_key: bytes = b""

    def uses_hash(self) -> bool:
        treatments = list(self.defaults.values())
        treatments += [t for fam in self.families.values() for t in fam.values()]
        return "hash" in treatments

    def treatment(self, family: str, kind: str) -> Treatment:
        return self.families.get(family, self.defaults).get(kind, "keep")

    @property
    def active(self) -> bool:
        return any(
            t != "keep"
            for t in [*self.defaults.values()]
            + [t for fam in self.families.values() for t in fam.values()]
        )


def pseudonym(key: bytes, value: str) -> str:
    if not value:
        return value
    return "h:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


class PrivacyFilter:
    def __init__(self, options: PrivacyOptions) -> None:
        self.options = options

    def apply(self, families: Iterable[Metric]) -> list[Metric]:
        if not self.options.active:
            return list(families)
        return [self._family(f) for f in families]

    def _plan(self, family: Metric) -> dict[str, Treatment]:
        plan: dict[str, Treatment] = {}
        for kind, names in LABEL_KINDS.items():
            treatment = self.options.treatment(family.name, kind)
            if treatment != "keep":
                plan.update(dict.fromkeys(names, treatment))
        return plan

    def _family(self, family: Metric) -> Metric:
        plan = self._plan(family)
        if isinstance(family, TableFamily):
            return self._table(family, plan)
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
                labels[name] = (
                    pseudonym(self.options.hash_key, value) if treatment == "hash" else value
                )
            key = (sample.name, tuple(sorted(labels.items())))
            if key not in merged:
                merged[key] = sample.value
            else:
                merged[key] = _merge(family.name, merged[key], sample.value)
        for (sample_name, labels_items), merged_value in merged.items():
            out.add_sample(sample_name, dict(labels_items), merged_value)
        return out

    def _table(self, family: TableFamily, plan: dict[str, Treatment]) -> TableFamily:
        """The per-sample path's result, kept as rows: rows that coincide once a column is
        dropped merged in first-seen order, the kept columns in label-name order (as the
        per-sample path leaves them; the writer then needs no reordering per row)."""
        if not family.rows or not set(family.labels) & set(plan):
            return family
        kept = sorted(
            (name, column)
            for column, name in enumerate(family.labels)
            if plan.get(name, "keep") != "drop"
        )
        hashed = [plan.get(name) == "hash" for name, _ in kept]
        names = [n for n, _ in kept]
        created: list[float | None] | None = None
        if isinstance(family, CreatedCounterTable):
            created = family.created
            out: TableFamily = CreatedCounterTable(family.name, family.documentation, names)
        else:
            out = TableFamily(family.name, family.documentation, family.type, names)
        key = self.options.hash_key
        pseudonyms: dict[str, str] = {}  # one HMAC per distinct value, not per row

        def hide(value: str) -> str:
            if value not in pseudonyms:
                pseudonyms[value] = pseudonym(key, value)
            return pseudonyms[value]

        merged: dict[tuple[str, ...], float] = {}
        #: Creation time per row; a merged series has no one creation time.
        created_of: dict[tuple[str, ...], float | None] = {}
        for index, (values, value) in enumerate(family.rows):
            row = tuple(
                hide(values[column]) if hash_it else values[column]
                for (_, column), hash_it in zip(kept, hashed, strict=True)
            )
            if row in merged:
                merged[row] = _merge(family.name, merged[row], value)
                created_of[row] = None
            else:
                merged[row] = value
                created_of[row] = created[index] if created is not None else None
        if isinstance(out, CreatedCounterTable):
            for row, value in merged.items():
                out.add(row, value, created_of[row])
        else:
            out.extend(merged.items())
        return out


def _merge(family: str, a: float, b: float) -> float:
    """Series that became one after a label was dropped: counts add up, timestamps take
    the latest, info series stay 1."""
    if family.endswith("_timestamp_seconds"):
        return max(a, b)
    if family.endswith("_info"):
        return 1.0
    return a + b
