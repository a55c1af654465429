"""What the guest modules read from a scrape, and their wait: one copy for every module."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v for lab, v in samples(text, name) if all(lab.get(k) == w for k, w in labels.items())
    )


def eventually(check: Callable[[], Any], timeout: float, what: str, step: float = 1.0) -> Any:
    """Retry check() until it returns a truthy value; wall-clock deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not seen within {timeout:.0f} s (last: {last!r})")
