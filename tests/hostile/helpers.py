"""Shared by the hostile-input tests: a hard per-call deadline and hypothesis settings.

A decoder that loops forever is the failure these tests look for, and hypothesis'
`deadline` only reports slow examples after they finish; `no_hang` interrupts one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from hypothesis import HealthCheck, settings

#: HOSTILE_EXAMPLES=5000 for a longer hunt; the default keeps the suite quick.
HOSTILE = settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "300")),
    deadline=None,  # no_hang is the bound; a loaded CI machine must not make timing flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For tests whose examples are costly to build (nested messages): a third as many.
HOSTILE_STRUCTURED = settings(HOSTILE, max_examples=max(HOSTILE.max_examples // 3, 10))


class Hang(Exception):
    """A call ran past its `no_hang` bound."""


@contextlib.contextmanager
def no_hang(seconds: float = 2.0) -> Iterator[None]:
    """Raise `Hang` in the main thread if the block runs longer than `seconds`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(_signum: int, _frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
