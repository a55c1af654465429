"""/sessions: the rendering (golden HTML and JSON of a fixed view, privacy, escaping of
client-chosen logins) and the route on the real app (404 when off, formats, headers,
basic auth and TLS through the same middleware as /metrics).

The golden files are tests/golden/sessions.html and sessions.json; after a deliberate
change rewrite them with `UPDATE_GOLDEN=1 pytest tests/web/test_sessions_page.py` and
say why in the commit.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import GaugeMetricFamily

from exporter.http import SESSIONS_OFF, build_app
from exporter.logins.model import LoginsView
from exporter.privacy import PrivacyFilter, PrivacyOptions, Treatment, pseudonym
from exporter.scrape import Scraper
from exporter.sessions_page import HIDDEN, render_html, render_json, visible
from exporter.web_config import load_web_config
from tests.web.dom import parse, tables
from tests.web.sample import EMPTY, HOSTILE, HOSTILE_LOGINS, SAMPLE

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
KEY = b"test-key"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


def privacy(users: Treatment = "keep", addresses: Treatment = "keep") -> PrivacyFilter:
    return PrivacyFilter(
        PrivacyOptions(defaults={"users": users, "addresses": addresses}, hash_key=KEY)
    )


# ---- rendering --------------------------------------------------------------------------


def test_html_matches_golden() -> None:
    golden("sessions.html", render_html(SAMPLE, version="TEST"))


def test_json_matches_golden() -> None:
    golden("sessions.json", render_json(SAMPLE, version="TEST"))


def test_html_rows() -> None:
    t = tables(render_html(SAMPLE))
    assert [row[0] for row in t["live"]] == ["alice", "bob", "bob", "peer-sn1"]
    alice = t["live"][0]
    assert alice[1:6] == ["l2tp-psk", "198.51.100.23", "198.51.100.23", "192.168.42.10", "ppp0"]
    assert alice[6] == "2026-12-03 05:47:26"
    assert alice[7] == "2h 12m 34s"
    assert alice[8:12] == ["46.0 MiB", "870 MiB", "18.0 KiB/s", "1.20 MiB/s"]
    assert t["live"][2][10:] == ["\N{EN DASH}"] * 2  # one reading: no rate yet
    assert t["live"][3][7] == "5d 3h 17m"
    assert [row[0] for row in t["ended"]] == ["carol", "alice", "dave"]
    assert t["ended"][2][-1] == "vanished (no ip-down record)"
    assert t["ended"][1][6] == "1h 23m 52s"


def test_exact_byte_counts_in_titles() -> None:
    titles = parse(render_html(SAMPLE)).titles
    assert "7318200011 bytes" in titles
    assert "912384211 bytes" in titles


def test_json_numbers_and_times() -> None:
    doc = json.loads(render_json(SAMPLE))
    assert doc["version"] == 1
    assert doc["at"] == SAMPLE.at
    assert doc["at_iso"] == "2026-12-03T08:00:00Z"
    first = doc["live"][0]
    assert first["receive_bytes"] == 48_213_577
    assert first["connected_seconds"] == 2 * 3600 + 754
    assert first["connected_since_iso"] == "2026-12-03T05:47:26Z"
    assert doc["live"][2]["receive_rate"] is None
    assert doc["ended"][2]["how"] == "vanished"
    assert doc["required"] == [
        {"login": "peer-sn1", "up": True},
        {"login": "peer-sn2", "up": False},
    ]


def test_empty_view() -> None:
    html = render_html(EMPTY)
    assert "Nobody is connected." in html
    assert "No ended session recorded yet." in html
    assert tables(html) == {}
    doc = json.loads(render_json(EMPTY))
    assert doc["live"] == doc["ended"] == doc["required"] == []


def test_refresh_is_optional() -> None:
    assert 'http-equiv="refresh" content="15"' in render_html(SAMPLE)
    assert "refresh" not in render_html(SAMPLE, refresh=None)


# ---- privacy ----------------------------------------------------------------------------


def metrics_pseudonym(filt: PrivacyFilter, user: str) -> str:
    """What /metrics shows for `user` in l2tp_ipsec_session_info under `filt`."""
    family = GaugeMetricFamily("l2tp_ipsec_session_info", "x", labels=["user", "conn"])
    family.add_metric([user, "c"], 1)
    (out,) = filt.apply([family])
    return out.samples[0].labels["user"]


def test_privacy_keep() -> None:
    html = render_html(SAMPLE, privacy("keep", "keep"))
    assert "alice" in html and "198.51.100.23" in html and 'class="hidden"' not in html


def test_privacy_hash_shows_the_metrics_pseudonym() -> None:
    filt = privacy("hash", "hash")
    alias = metrics_pseudonym(filt, "alice")
    assert alias == pseudonym(KEY, "alice") != "alice"
    html = render_html(SAMPLE, filt)
    t = tables(html)
    assert t["live"][0][0] == alias
    assert t["live"][0][3] == pseudonym(KEY, "198.51.100.23")
    assert t["ended"][1][0] == alias
    for secret in ("alice", "peer-sn1", "198.51.100.23", "192.168.42.10", "192.168.1.20"):
        assert secret not in html
    doc = json.loads(render_json(SAMPLE, filt))
    assert doc["live"][0]["login"] == alias
    assert doc["privacy"] == {"users": "hash", "addresses": "hash"}
    assert doc["required"][0]["login"] == pseudonym(KEY, "peer-sn1")


def test_privacy_drop_shows_hidden() -> None:
    html = render_html(SAMPLE, privacy("drop", "keep"))
    t = tables(html)
    assert {row[0] for row in t["live"] + t["ended"]} == {HIDDEN}
    assert t["live"][0][2] == HIDDEN  # the IKE identity is a user kind too
    assert t["live"][0][3] == "198.51.100.23"  # addresses kept
    for secret in ("alice", "bob", "peer-sn1", "carol"):
        assert secret not in html
    doc = json.loads(render_json(SAMPLE, privacy("keep", "drop")))
    assert doc["live"][0]["login"] == "alice"
    assert doc["live"][0]["public_address"] is None
    assert doc["live"][0]["inner_address"] is None
    assert doc["ended"][0]["public_address"] is None


def test_privacy_follows_the_session_info_family() -> None:
    """A per-family setting for l2tp_ipsec_session_info applies; one for another family
    does not."""
    ours = PrivacyFilter(
        PrivacyOptions(families={"l2tp_ipsec_session_info": {"users": "hash"}}, hash_key=KEY)
    )
    assert tables(render_html(SAMPLE, ours))["live"][0][0] == metrics_pseudonym(ours, "alice")
    other = PrivacyFilter(
        PrivacyOptions(families={"l2tp_ipsec_ike_sa_info": {"users": "drop"}}, hash_key=KEY)
    )
    assert tables(render_html(SAMPLE, other))["live"][0][0] == "alice"


# ---- hostile logins ---------------------------------------------------------------------


def test_hostile_logins_are_text() -> None:
    html = render_html(HOSTILE)
    parsed = parse(html)
    # No element a login could have injected; the only tags are the page's own.
    assert set(parsed.elements) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "time",
        "table", "thead", "tbody", "tr", "th", "td", "span", "ul", "li",
    }  # fmt: skip
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "\x1b" not in html and "\x00" not in html and "\u202e" not in html
    rows = parsed.tables["live"]
    assert len(rows) == len(HOSTILE_LOGINS)
    assert [row[0] for row in rows] == [visible(login) for login in HOSTILE_LOGINS]
    assert rows[2][0] == "evil\\x1b[31m\\x00\\u202egnp.exe\\x0asecond line"
    assert rows[0][1] == "<b>conn</b>"
    assert [row[0] for row in parsed.tables["ended"]] == [visible(x) for x in HOSTILE_LOGINS]
    assert parsed.tables["ended"][0][-1] == "<i>how</i>"


def test_long_values_are_cut_with_all_of_it_in_the_tooltip() -> None:
    login = "x" * 300
    view = LoginsView(at=SAMPLE.at, live=(), ended=(), totals=(), required=((login, True),))
    html = render_html(view)
    assert f'<span title="{login}">{"x" * 63}…</span>' in html
    assert json.loads(render_json(view))["required"][0]["login"] == login


def test_hostile_logins_in_json() -> None:
    text = render_json(HOSTILE)
    assert text.isascii()
    doc = json.loads(text)
    assert [s["login"] for s in doc["live"]] == list(HOSTILE_LOGINS)


# ---- the route --------------------------------------------------------------------------


def provider(view: LoginsView) -> Callable[[], Awaitable[LoginsView]]:
    async def get() -> LoginsView:
        return view

    return get


async def test_route_html_and_json() -> None:
    app = build_app(Scraper([]), "/metrics", sessions=provider(SAMPLE))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/sessions")
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store"
        assert tables(await resp.text())["live"][0][0] == "alice"
        resp = await client.get("/sessions?format=json")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert (await resp.json())["live"][0]["login"] == "alice"
        resp = await client.get("/sessions?format=xml")
        assert resp.status == 400
        landing = await (await client.get("/")).text()
        assert '<a href="/sessions">/sessions</a>' in landing


async def test_route_off_answers_404() -> None:
    async with TestClient(TestServer(build_app(Scraper([]), "/metrics"))) as client:
        for path in ("/sessions", "/sessions?format=json"):
            resp = await client.get(path)
            assert resp.status == 404
            assert await resp.text() == SESSIONS_OFF
        landing = await (await client.get("/")).text()
        assert 'href="/sessions"' not in landing
        assert "/sessions: off" in landing


async def test_route_answers_503_when_the_view_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> LoginsView:
        raise OSError("netlink went away")

    async with TestClient(TestServer(build_app(Scraper([]), "/metrics", sessions=broken))) as c:
        resp = await c.get("/sessions")
        assert resp.status == 503
        assert "netlink" not in await resp.text()
    assert "netlink went away" in caplog.text


async def test_route_follows_the_scrapers_privacy_after_a_reload() -> None:
    scraper = Scraper([])
    app = build_app(scraper, "/metrics", sessions=provider(SAMPLE))
    async with TestClient(TestServer(app)) as client:
        assert tables(await (await client.get("/sessions")).text())["live"][0][0] == "alice"
        scraper.privacy = privacy("hash")  # what the daemon's reload does
        page = await (await client.get("/sessions")).text()
        assert tables(page)["live"][0][0] == pseudonym(KEY, "alice")


async def test_route_explicit_privacy_wins() -> None:
    app = build_app(Scraper([]), "/metrics", sessions=provider(SAMPLE), privacy=privacy("drop"))
    async with TestClient(TestServer(app)) as client:
        assert tables(await (await client.get("/sessions")).text())["live"][0][0] == HIDDEN


# ---- basic auth and TLS: the web config's middleware covers /sessions -------------------

PASSWORD = "s3cret pass"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext | None]]:
    """The app behind a web config with basic auth, and TLS when openssl is there:
    (base URL, client SSL context)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    body = f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    client_ctx: ssl.SSLContext | None = None
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out",
             "server.crt", "-days", "2", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=IP:127.0.0.1"],
            cwd=tmp_path, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        body = f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{body}"
        client_ctx = ssl.create_default_context(cafile=str(tmp_path / "server.crt"))
    (tmp_path / "web.yml").write_text(body)
    config = load_web_config(str(tmp_path / "web.yml"))
    app = build_app(Scraper([]), "/metrics", [config.middleware()], sessions=provider(SAMPLE))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.ssl_context())
    await site.start()
    port = runner.addresses[0][1]
    yield f"{'https' if client_ctx else 'http'}://127.0.0.1:{port}", client_ctx
    await runner.cleanup()


async def _get(url: str, ctx: ssl.SSLContext | None, **kw: Any) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url, ssl=ctx if ctx is not None else True, **kw) as resp,
    ):
        return resp.status, await resp.text()


async def test_sessions_needs_credentials(secured: tuple[str, ssl.SSLContext | None]) -> None:
    url, ctx = secured
    for path in ("/sessions", "/sessions?format=json"):
        status, body = await _get(url + path, ctx)
        assert status == 401, (path, body)
        assert "alice" not in body
        status, _ = await _get(url + path, ctx, headers=_basic("prometheus", "wrong"))
        assert status == 401
        status, body = await _get(url + path, ctx, headers=_basic("prometheus", PASSWORD))
        assert status == 200
        assert "alice" in body
