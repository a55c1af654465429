"""The one duration grammar of flags, the configuration file, probe modules and the web
configuration: `500ms`, `10s`, `5m`, `1h` or a plain number of seconds."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
#: The longest duration a Go exporter's flag can hold (time.Duration, int64 nanoseconds,
#: ~292 years); also the most Python's own timeouts take (socket.settimeout raises
#: OverflowError beyond it). Anything longer is a typo, not a wish.
MAX_DURATION = (2**63 - 1) / 1e9


def parse_duration(value: Any) -> float:
    """Seconds from `10s`, `500ms`, `5m`, `1h` or a plain number of seconds (a YAML
    number too). Refused (ValueError naming the value): anything else, negative,
    not finite (`inf`, `nan`, `1.0e+400`) or beyond `MAX_DURATION`."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 10s, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # a YAML integer of 400 digits
            seconds = math.inf
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"expected a duration like 10s, 500ms, 5m or 1h, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of 0 or more seconds, got {value!r}")
    if not seconds <= MAX_DURATION:
        raise ValueError(f"{value!r} is longer than any timeout can be (~292 years)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest text `parse_duration` reads back as `seconds` (help texts, README)."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    if seconds < 1 and (seconds * 1000) == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"
