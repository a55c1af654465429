"""The /sessions page: who is connected now and the last ended sessions, as HTML (no
JavaScript) and JSON. Pure: a LoginsView and the privacy settings in, text out.

Logins and IKE identities are chosen by the clients (attacker-controlled): every value
is escaped, and control or format characters (bidi overrides, escape sequences) are
shown as visible `\\xNN` / `\\uNNNN` escapes. Privacy applies the treatments of the
family `l2tp_ipsec_session_info`, so one setting hides the same person on the page and
in /metrics: `drop` shows "hidden" (null in JSON), `hash` the pseudonym /metrics shows.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from html import escape
from typing import Any

from exporter import __version__
from exporter.logins.model import EndedSession, LiveSession, LoginsView
from exporter.privacy import PrivacyFilter, PrivacyOptions, Treatment, pseudonym

#: The family whose privacy treatments the page follows (it shows what that family shows).
PRIVACY_FAMILY = "l2tp_ipsec_session_info"
#: Version of the JSON document's shape; raised when a field changes meaning or goes.
JSON_VERSION = 1
#: The HTML page reloads itself this often (a <meta http-equiv="refresh">, no script).
REFRESH_SECONDS = 15
HIDDEN = "hidden"
#: Longer client-chosen values are cut in the table (all of it in the cell's tooltip).
SHOWN_CHARS = 64

#: Security headers for both formats: the page needs nothing but its inline style.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

HOW = {
    "hook": "logged out (ip-down)",
    "vanished": "vanished (no ip-down record)",
}


class Hider:
    """The page's view of the privacy settings: a value of a kind kept, hashed or
    dropped (None)."""

    def __init__(self, privacy: PrivacyFilter | None) -> None:
        options = privacy.options if privacy is not None else PrivacyOptions()
        self.key = options.hash_key
        self.users: Treatment = options.treatment(PRIVACY_FAMILY, "users")
        self.addresses: Treatment = options.treatment(PRIVACY_FAMILY, "addresses")

    def _apply(self, treatment: Treatment, value: str) -> str | None:
        if treatment == "drop":
            return None
        if treatment == "hash":
            return pseudonym(self.key, value)
        return value

    def user(self, value: str) -> str | None:
        return self._apply(self.users, value)

    def address(self, value: str) -> str | None:
        return self._apply(self.addresses, value)


# --- formatting ---------------------------------------------------------------------


def visible(value: str) -> str:
    """Control, format, surrogate and unassigned characters as escapes; the rest as is."""
    if value.isprintable():
        return value
    out = []
    for ch in value:
        if ch.isprintable():
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":
            out.append(" ")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def text(value: str | None) -> str:
    """A client-chosen value as HTML text: hidden, empty shown as a dash, else escaped."""
    if value is None:
        return f'<span class="hidden">{HIDDEN}</span>'
    if value == "":
        return '<span class="none">&ndash;</span>'
    shown = visible(value)
    if len(shown) > SHOWN_CHARS:
        return f'<span title="{escape(shown)}">{escape(shown[: SHOWN_CHARS - 1])}…</span>'
    return escape(shown)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc(t: float | None) -> str:
    if t is None:
        return '<span class="none">&ndash;</span>'
    shown = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{iso(t)}">{shown}</time>'


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "&ndash;"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def human_bytes(n: float) -> str:
    """IEC units, three significant digits: 999 B, 1.00 KiB, 12.3 MiB, 456 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            if unit == "B":
                return f"{int(value)} B"
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def bytes_cell(n: int) -> str:
    return f'<td class="num" title="{n} bytes">{human_bytes(n)}</td>'


def rate_cell(rate: float | None) -> str:
    if rate is None:
        return '<td class="num" title="needs two readings">&ndash;</td>'
    return f'<td class="num" title="{rate:.1f} bytes/s">{human_bytes(rate)}/s</td>'


# --- HTML ---------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left;
  vertical-align: top; }
td { white-space: nowrap; }
th { background: #eef2f6; }
tbody tr:nth-child(even) { background: #f8f9fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hidden, .none { color: #888; font-style: italic; }
.down { color: #a40000; font-weight: bold; } .up { color: #0a6b0a; }
p.meta { color: #555; }
""".strip()

LIVE_HEADER = (
    "Login", "IKE connection", "IKE identity", "Public address", "Inner address",
    "Interface", "Connected since (UTC)", "For", "In (from client)", "Out (to client)",
    "Rate in", "Rate out",
)  # fmt: skip
ENDED_HEADER = (
    "Login", "From", "Inner address", "Interface", "Start (UTC)", "End (UTC)", "Duration",
    "In (from client)", "Out (to client)", "How it ended",
)  # fmt: skip


def _head(cells: tuple[str, ...]) -> str:
    return "<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in cells) + "</tr></thead>"


def _live_row(s: LiveSession, at: float, hide: Hider) -> str:
    since = s.connected_since
    return (
        "<tr>"
        f'<td class="login">{text(hide.user(s.login))}</td>'
        f"<td>{text(s.conn)}</td>"
        f"<td>{text(hide.user(s.ike_identity))}</td>"
        f"<td>{text(hide.address(s.public_address))}</td>"
        f"<td>{text(hide.address(s.inner_address))}</td>"
        f"<td>{text(s.interface)}</td>"
        f"<td>{utc(since)}</td>"
        f'<td class="num">{duration(None if since is None else at - since)}</td>'
        f"{bytes_cell(s.receive_bytes)}{bytes_cell(s.transmit_bytes)}"
        f"{rate_cell(s.receive_rate)}{rate_cell(s.transmit_rate)}"
        "</tr>"
    )


def _ended_row(s: EndedSession, hide: Hider) -> str:
    how = HOW.get(s.how, s.how)
    return (
        "<tr>"
        f'<td class="login">{text(hide.user(s.login))}</td>'
        f"<td>{text(hide.address(s.public_address))}</td>"
        f"<td>{text(hide.address(s.inner_address))}</td>"
        f"<td>{text(s.interface)}</td>"
        f"<td>{utc(s.started_at)}</td>"
        f"<td>{utc(s.ended_at)}</td>"
        f'<td class="num">{duration(s.duration_seconds)}</td>'
        f"{bytes_cell(s.receive_bytes)}{bytes_cell(s.transmit_bytes)}"
        f"<td>{text(how)}</td>"
        "</tr>"
    )


def _table(rows: list[str], header: tuple[str, ...], table_id: str, empty: str) -> list[str]:
    if not rows:
        return [f'<p class="empty" id="{table_id}-empty">{escape(empty)}</p>']
    return [f'<table id="{table_id}">', _head(header), "<tbody>", *rows, "</tbody>", "</table>"]


def render_html(
    view: LoginsView,
    privacy: PrivacyFilter | None = None,
    refresh: int | None = REFRESH_SECONDS,
    version: str = __version__,
) -> str:
    hide = Hider(privacy)
    live = [_live_row(s, view.at, hide) for s in view.live]
    ended = [_ended_row(s, hide) for s in view.ended]
    n_live = len(view.live)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
    ]
    if refresh:
        parts.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    parts += [
        f"<title>Sessions ({n_live} connected) &ndash; l2tp-ipsec-exporter</title>",
        f"<style>\n{STYLE}\n</style>",
        "</head>",
        "<body>",
        f"<h1>Who is on: {n_live} connected</h1>",
        f'<p class="meta">As of {utc(view.at)} UTC · l2tp-ipsec-exporter '
        f"{escape(version)} · "
        + (f"reloads every {int(refresh)} s · " if refresh else "")
        + '<a href="/">home</a> · <a href="?format=json">JSON</a></p>',
        "<h2>Connected now</h2>",
        *_table(live, LIVE_HEADER, "live", "Nobody is connected."),
    ]
    if view.required:
        parts += ["<h2>Required logins</h2>", '<ul id="required">']
        for login, up in view.required:
            state = '<span class="up">up</span>' if up else '<span class="down">DOWN</span>'
            parts.append(f"<li>{text(hide.user(login))}: {state}</li>")
        parts.append("</ul>")
    parts += [
        f"<h2>Last {len(view.ended)} ended sessions</h2>",
        *_table(ended, ENDED_HEADER, "ended", "No ended session recorded yet."),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


# --- JSON ---------------------------------------------------------------------------


def _time(prefix: str, t: float | None) -> dict[str, Any]:
    return {prefix: t, f"{prefix}_iso": None if t is None else iso(t)}


def _live_json(s: LiveSession, at: float, hide: Hider) -> dict[str, Any]:
    since = s.connected_since
    return {
        "login": hide.user(s.login),
        "ike_connection": s.conn,
        "ike_identity": hide.user(s.ike_identity),
        "public_address": hide.address(s.public_address),
        "inner_address": hide.address(s.inner_address),
        "interface": s.interface,
        **_time("connected_since", since),
        "connected_seconds": None if since is None else round(max(0.0, at - since), 3),
        "receive_bytes": s.receive_bytes,
        "transmit_bytes": s.transmit_bytes,
        "receive_rate": s.receive_rate,
        "transmit_rate": s.transmit_rate,
    }


def _ended_json(s: EndedSession, hide: Hider) -> dict[str, Any]:
    return {
        "login": hide.user(s.login),
        "public_address": hide.address(s.public_address),
        "inner_address": hide.address(s.inner_address),
        "interface": s.interface,
        **_time("started_at", s.started_at),
        **_time("ended_at", s.ended_at),
        "duration_seconds": s.duration_seconds,
        "receive_bytes": s.receive_bytes,
        "transmit_bytes": s.transmit_bytes,
        "how": s.how,
    }


def render_json(
    view: LoginsView, privacy: PrivacyFilter | None = None, version: str = __version__
) -> str:
    hide = Hider(privacy)
    doc: dict[str, Any] = {
        "version": JSON_VERSION,
        "exporter_version": version,
        **_time("at", view.at),
        "privacy": {"users": hide.users, "addresses": hide.addresses},
        "live": [_live_json(s, view.at, hide) for s in view.live],
        "ended": [_ended_json(s, hide) for s in view.ended],
        "required": [{"login": hide.user(login), "up": up} for login, up in view.required],
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
