"""The one duration grammar: what it reads, and that what help texts and README show reads
back to the same value."""

from __future__ import annotations

import pytest

from exporter.settings.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("1m", 60), ("1h", 3600), ("2.5", 2.5), (7, 7), ("0", 0)],
)
def test_reads(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1d", "-1s", "inf", "nan", "1.0e+400", "", "5 m", True])
def test_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds", [0, 0.001, 0.25, 0.5, 1, 1.5, 5, 59, 60, 90, 120, 3600, 7200, 5400, 86400]
)
def test_shown_durations_read_back(seconds: float) -> None:
    shown = format_duration(seconds)
    assert parse_duration(shown) == seconds, shown
