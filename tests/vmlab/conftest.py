"""Fixtures for the vmlab tests: one emulated guest per test module."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import build
from .guest import QEMU, Guest


def vmlab_skip_reason(release: str | None = None) -> str | None:
    """Why the guest (of ``release``, default the default one) cannot run here, or None
    when it can."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    cached = (build.image_dir(release) / "manifest.json").exists()
    if not cached and os.geteuid() != 0:
        return f"no cached guest image at {build.image_dir(release)} and building one needs root"
    return None


# The strongSwan-flavour stack tests run on every release's image; VMLAB_RELEASE
# picks one.
STACK_RELEASES = (
    [os.environ["VMLAB_RELEASE"]] if os.environ.get("VMLAB_RELEASE") else list(build.RELEASES)
)


#: VMLAB_MATRIX=full (or a VMLAB_RELEASE chosen by hand) runs every module on every
#: release; .ci/run runs the subset of docs/vmlab.md, "CI subset" (the 45-minute budget).
FULL_MATRIX = os.environ.get("VMLAB_MATRIX") == "full" or bool(os.environ.get("VMLAB_RELEASE"))

# The Libreswan collector's and the XFRM notifications' guest modules run on Debian 13
# only in .ci/run; their Debian 12 recordings are replayed in unit tests.
LIBRESWAN_RELEASES = list(STACK_RELEASES) if FULL_MATRIX else ["trixie"]


def skip_outside_ci_subset(release: str, ci_releases: tuple[str, ...] | None) -> None:
    """Skip a module's guest of `release` when .ci/run leaves it to VMLAB_MATRIX=full: a
    module names the releases CI runs in `CI_RELEASES` (absent: all)."""
    if FULL_MATRIX or ci_releases is None:
        return
    if release not in ci_releases:
        pytest.skip(f"{release}: run with VMLAB_MATRIX=full (docs/vmlab.md, CI subset)")


@pytest.fixture(scope="module", params=STACK_RELEASES)
def guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    release = str(request.param)
    skip_outside_ci_subset(release, getattr(request.module, "CI_RELEASES", None))
    reason = vmlab_skip_reason(release)
    if reason:
        pytest.skip(reason)
    # VMLAB_LOG_DIR keeps the serial and daemon logs somewhere known (CI artifacts).
    log_dir = None
    if os.environ.get("VMLAB_LOG_DIR"):
        log_dir = Path(os.environ["VMLAB_LOG_DIR"]) / release
        log_dir.mkdir(parents=True, exist_ok=True)
    g = Guest(clients=3, log_dir=log_dir, release=release)
    with g:
        yield g
        failed = request.session.testsfailed
        if failed:
            sys.stderr.write(
                f"\n--- vmlab serial log {g.serial_log} (tail) ---\n{g.serial_tail(40)}\n"
            )
