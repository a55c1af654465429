"""Settings of per-login accounting (the `users` collector) and the /sessions page,
declared next to the ledger they configure (`exporter.config.Settings` holds them)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from exporter.settings import schema
from exporter.settings.schema import Kind, count, duration, setting

#: Most ended sessions the page's history may keep (each is a few hundred bytes).
MAX_HISTORY = 10_000
_LOGIN_PATTERN = re.compile(r"^[^\s,]{1,256}$")


def _patterns_from_text(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in items:
        if not _LOGIN_PATTERN.match(item):
            raise ValueError(f"{item!r} is not a login or a shell pattern")
    return items


def _patterns_from_yaml(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return _patterns_from_text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _patterns_from_text(",".join(value))
    raise ValueError(f"expected a list of logins or shell patterns, got {value!r}")


def _check_patterns(value: tuple[str, ...]) -> None:
    _patterns_from_text(",".join(value))


#: Logins or shell patterns (`peer-*`), comma-separated on the command line, a list in YAML.
LOGIN_PATTERNS: Kind[tuple[str, ...]] = Kind(
    "LOGINS", _patterns_from_text, _patterns_from_yaml, ",".join, _check_patterns
)


def _history_check(value: int) -> None:
    if not 0 <= value <= MAX_HISTORY:
        raise ValueError(f"must be between 0 and {MAX_HISTORY}")


_HISTORY: Kind[int] = Kind(
    "N",
    lambda text: _checked(count(minimum=0).from_text(text)),
    lambda value: _checked(count(minimum=0).from_yaml(value)),
    str,
    _history_check,
)


def _checked(value: int) -> int:
    _history_check(value)
    return value


@dataclass(frozen=True)
class LoginOptions:
    """Per-login (PPP user) accounting across reconnects, and the live session page."""

    enabled: bool = setting(
        True,
        flag="--collector.users",
        yaml="collectors.users.enabled",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="per-login (PPP user) counters that survive reconnects: sessions, logins, "
        "logouts, connected time, traffic (needs the shipped pppd hooks)",
    )
    #: A login with no session and no change for this long is forgotten (its series go;
    #: a later login starts them again from zero, which Prometheus reads as a reset).
    idle_expiry: float = setting(
        24 * 3600.0,
        flag="--collector.users.idle-expiry",
        yaml="collectors.users.idle_expiry",
        kind=duration(zero_ok=False),
        example="168h",
        help="forget a login (drop its series) after this long with no session",
    )
    max_users: int = setting(
        1000,
        flag="--collector.users.max",
        yaml="collectors.users.max",
        kind=count(minimum=1),
        example="200",
        help="most logins tracked at once; beyond it the longest-idle one is forgotten, "
        "and a new login is not tracked while all are connected",
    )
    #: Logins (or shell patterns) that must always have a session: peering routers.
    required: tuple[str, ...] = setting(
        (),
        flag="--collector.users.required",
        yaml="collectors.users.required",
        kind=LOGIN_PATTERNS,
        example="peer-*,nycmesh-sn1",
        help="logins that must always be connected (names or shell patterns, "
        "comma-separated): l2tp_ipsec_required_login_up per login",
    )
    #: Ended sessions kept for the /sessions page's history.
    history: int = setting(
        50,
        flag="--collector.users.history",
        yaml="collectors.users.history",
        kind=_HISTORY,
        example="200",
        help=f"ended sessions the /sessions page lists (0 to {MAX_HISTORY})",
    )
    page: bool = setting(
        True,
        flag="--web.sessions",
        yaml="web.sessions",
        kind=schema.SWITCH,
        example="false",
        reload="restart",
        help="serve /sessions: who is connected now and the last ended sessions (HTML, "
        "and JSON with ?format=json); same TLS, auth and privacy settings as /metrics",
    )

    def is_required(self, login: str) -> bool:
        return any(fnmatch.fnmatchcase(login, p) for p in self.required)
