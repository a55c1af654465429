"""gc_paused: collection off inside, as it was outside afterwards (issue 19)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exporter.kernel.gcpause import gc_paused


@pytest.fixture(autouse=True)
def _gc_back_on() -> Iterator[None]:
    yield
    gc.enable()


@gc_paused
def inside(fail: bool = False) -> bool:
    if fail:
        raise ValueError("boom")
    return gc.isenabled()


@gc_paused
def nested() -> tuple[bool, bool]:
    return inside(), gc.isenabled()


def test_off_inside_on_again_after() -> None:
    gc.enable()
    assert inside() is False
    assert gc.isenabled()


def test_on_again_after_an_exception() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="boom"):
        inside(fail=True)
    assert gc.isenabled()


def test_nested_calls_leave_it_to_the_outermost() -> None:
    gc.enable()
    assert nested() == (False, False)
    assert gc.isenabled()


def test_off_before_stays_off() -> None:
    gc.disable()
    assert inside() is False
    assert not gc.isenabled()
