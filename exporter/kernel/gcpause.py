"""Python's cyclic garbage collector held off while a decoder, the join, the login ledger
or a renderer builds a scrape's objects.

A scrape at 5,000 clients makes hundreds of thousands of short-lived objects (decoded
messages, joined sessions, rows), none in a reference cycle. Each 700 allocations start a
young-generation collection, every tenth of those an older one, and some of those a full
one over everything the process holds (the IKE daemon's snapshot, the ledger): about a
quarter of such a scrape's CPU went there (bench/kernel_scale.py). Held off, the
collector looks at the new objects once, after the function returns. Reference counting
frees them as before; only cycles wait, and these functions make none.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gc_paused(func: Callable[P, R]) -> Callable[P, R]:
    """`func` runs with automatic collection off (when it was on: nested and concurrent
    calls leave it as the outermost found it)."""

    @functools.wraps(func)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()

    return paused
