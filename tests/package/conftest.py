"""The Debian package tests' marker (`-m "not deb"` leaves them out)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deb: builds the .deb (scripts/build-deb) and installs it in a clean Debian 12 chroot "
        "(root, Debian's archive and PyPI)",
    )
