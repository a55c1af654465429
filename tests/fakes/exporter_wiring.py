"""The exporter's side of the wiring tests: its settings against a fake VICI server, and
what a scrape of it says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.config import Settings, StrongswanOptions
from exporter.kernel.options import KernelOptions
from exporter.scrape import Scraper
from exporter.vici.address import ViciAddress

#: The kernel collectors read the host; the wiring tests are about charon only.
NO_KERNEL = KernelOptions(ppp=False, l2tp=False, xfrm=False, sessions=False)


def settings_for(socket: Path, timeout: float = 2.0, **strongswan: Any) -> Settings:
    """Settings of an exporter asking the fake on `socket`; `strongswan` overrides
    StrongswanOptions' fields (short intervals for tests)."""
    return Settings(
        vici_socket=ViciAddress("unix", path=str(socket)),
        vici_timeout=timeout,
        strongswan=StrongswanOptions(**strongswan),
        kernel=NO_KERNEL,
    )


def config_file_text(socket: Path, timeout: str, refresh: str = "50ms", events: bool = True) -> str:
    """A configuration file (--config.file) with the same shape as `settings_for`; the
    SAs are listed when the event stream (re)connects, else every hour."""
    on = "true" if events else "false"
    strongswan = f"refresh_interval: {refresh}, sa_refresh_interval: 1h, events: {on}"
    return (
        f"vici: {{socket: 'unix://{socket}', timeout: {timeout}}}\n"
        "collectors:\n"
        f"  strongswan: {{{strongswan}}}\n"
        "  ppp: {enabled: false}\n"
        "  l2tp: {enabled: false}\n"
        "  xfrm: {enabled: false}\n"
        "  sessions: {enabled: false}\n"
    )


async def scrape(scraper: Scraper) -> dict[str, float]:
    """One scrape: every sample by name, samples of one name with labels summed
    (`strongswan_ike_sas` → IKE SAs over every connection and state)."""
    values: dict[str, float] = {}
    for family in await scraper.scrape():
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values
