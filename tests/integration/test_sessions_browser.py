"""/sessions in a real browser: Debian's chromium, headless, loads the page from the real
app (build_app with the web config's basic auth) on loopback; its DOM after load has the
rows of the fixed view, hostile logins stay text (chromium's own HTML parser, not ours,
decides), and a screenshot is taken.

`UPDATE_SCREENSHOT=1 pytest tests/integration/test_sessions_browser.py` also writes the
screenshot to docs/sessions-page.png (the README's picture).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web

from exporter.http import build_app
from exporter.logins.model import LoginsView
from exporter.scrape import Scraper
from exporter.sessions_page import visible
from exporter.web_config import load_web_config
from tests import browser
from tests.web.dom import parse, tables
from tests.web.sample import HOSTILE, HOSTILE_LOGINS, SAMPLE

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

DOCS_PNG = Path(__file__).resolve().parent.parent.parent / "docs" / "sessions-page.png"
USER, PASSWORD = "admin", "pa ss:wörd"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, LoginsView]]]:
    """(base URL, {"view": the view /sessions shows}) of the real app with basic auth."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    config = load_web_config(tmp_path / "web.yml")
    shown = {"view": SAMPLE}

    async def sessions() -> LoginsView:
        return shown["view"]

    app = build_app(Scraper([]), "/metrics", [config.middleware()], sessions=sessions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", shown
    await runner.cleanup()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_page_in_chromium(server: tuple[str, dict[str, LoginsView]], tmp_path: Path) -> None:
    url, _ = server
    dom = await asyncio.to_thread(browser.dump_dom, url + "/sessions", (USER, PASSWORD))
    t = tables(dom)
    assert [row[0] for row in t["live"]] == ["alice", "bob", "bob", "peer-sn1"]
    assert t["live"][0][1:6] == [
        "l2tp-psk", "198.51.100.23", "198.51.100.23", "192.168.42.10", "ppp0",
    ]  # fmt: skip
    assert t["live"][0][8:10] == ["46.0 MiB", "870 MiB"]
    assert [row[0] for row in t["ended"]] == ["carol", "alice", "dave"]
    assert t["ended"][2][-1] == "vanished (no ip-down record)"
    assert "Who is on: 4 connected" in dom

    png = await asyncio.to_thread(
        browser.screenshot, url + "/sessions", tmp_path / "sessions.png", (USER, PASSWORD)
    )
    assert png_size(png) == (1400, 900)
    assert png.stat().st_size > 20_000  # a rendered table, not a blank page
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(png, DOCS_PNG)


async def test_without_credentials_chromium_gets_no_page(
    server: tuple[str, dict[str, LoginsView]],
) -> None:
    """Headless chromium cannot ask for a password: the 401 ends the load."""
    url, _ = server
    for auth in (None, (USER, "wrong")):
        with pytest.raises(browser.BrowserError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            await asyncio.to_thread(browser.dump_dom, url + "/sessions", auth)


async def test_hostile_logins_stay_text_in_chromium(
    server: tuple[str, dict[str, LoginsView]],
) -> None:
    url, shown = server
    shown["view"] = HOSTILE
    dom = await asyncio.to_thread(browser.dump_dom, url + "/sessions", (USER, PASSWORD))
    parsed = parse(dom)
    assert "script" not in parsed.elements and "img" not in parsed.elements
    assert "b" not in parsed.elements and "i" not in parsed.elements
    assert [row[0] for row in parsed.tables["live"]] == [visible(x) for x in HOSTILE_LOGINS]
    assert [row[0] for row in parsed.tables["ended"]] == [visible(x) for x in HOSTILE_LOGINS]


def test_auth_goes_into_the_url() -> None:
    assert (
        browser.with_auth("http://127.0.0.1:9/sessions", ("a b", "p:w@"))
        == "http://a%20b:p%3Aw%40@127.0.0.1:9/sessions"
    )
    with pytest.raises(ValueError):
        browser.with_auth("http://example.com/", None)
