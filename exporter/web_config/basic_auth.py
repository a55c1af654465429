"""`basic_auth_users`: checking `Authorization: Basic` against bcrypt hashes, with a
verdict cache and a bound on the checks waiting, so a flood of guesses cannot queue CPU."""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from hashlib import sha256

import bcrypt

BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: Go's bcrypt reads costs 4-31 and exporter-toolkit takes them all; each step doubles the
#: CPU of a check (cost 10: 0.05 s, 14: 0.9 s, 31: ~31 h on the machine of the tests).
#: Checks run one at a time and an unknown user is checked at the highest cost, so one
#: client with made-up credentials holds that CPU; 14 keeps a check well inside
#: Prometheus' 10 s scrape timeout also on a CPU several times slower.
BCRYPT_MIN_COST = 4
BCRYPT_MAX_COST = 14
#: bcrypt only reads the first 72 bytes; the `bcrypt` package refuses longer passwords.
BCRYPT_MAX_PASSWORD = 72
#: Verified (user, password) pairs remembered, so a scrape does not pay bcrypt's cost.
AUTH_CACHE_SIZE = 256
#: Distinct credentials waiting for a bcrypt check at once; beyond this, 429 without a
#: check, so a flood of wrong passwords cannot queue unbounded CPU work.
MAX_PENDING_CHECKS = 32


class Verdict(enum.Enum):
    """Outcome of one credential check."""

    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes.

    bcrypt costs ~0.1-0.3 s per check by design; it runs in a worker thread, one at a
    time, and each verdict is remembered under a keyed digest of (user, password) so a
    scrape with known credentials costs a dictionary lookup. An unknown user is checked
    against a dummy hash of the same cost, so timing does not tell which users exist.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = asyncio.Lock()
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self._dummy: bytes | None = None
        self.checks = 0  # bcrypt verifications done, for tests and debugging

    def _cache_key(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._key, message, sha256).digest()

    def _lookup(self, user: str) -> bytes | None:
        # Compare against every user, without an early exit.
        found: bytes | None = None
        wanted = user.encode("utf-8", errors="surrogateescape")
        for name, hashed in self._users.items():
            if hmac.compare_digest(name.encode("utf-8", errors="surrogateescape"), wanted):
                found = hashed
        return found

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            cost = max((int(h[4:6]) for h in self._users.values()), default=10)  # "$2y$10$…"
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        return self._dummy

    def _verify(self, password: bytes, hashed: bytes | None) -> bool:
        """Blocking: runs in a worker thread."""
        self.checks += 1
        target = hashed if hashed is not None else self._dummy_hash()
        try:
            ok = bcrypt.checkpw(password, target)
        except ValueError:  # longer than 72 bytes, or a hash bcrypt cannot read
            ok = False
        return ok and hashed is not None

    async def check(self, header: str | None) -> Verdict:
        credentials = parse_basic_authorization(header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        if len(password) > BCRYPT_MAX_PASSWORD:
            return Verdict.DENIED
        key = self._cache_key(user.encode("utf-8", errors="surrogateescape"), password)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return Verdict.OK if cached else Verdict.DENIED
        # Requests with the same credentials share one check (and one place in the queue):
        # a burst of scrapes after a restart is one bcrypt run, not a 429.
        shared = self._inflight.get(key)
        if shared is None:
            if len(self._inflight) >= MAX_PENDING_CHECKS:
                return Verdict.BUSY
            shared = asyncio.ensure_future(self._check_new(key, user, password))
            self._inflight[key] = shared
            shared.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shield: a client that hangs up must not cancel the check others wait for.
        return Verdict.OK if await asyncio.shield(shared) else Verdict.DENIED

    async def _check_new(self, key: bytes, user: str, password: bytes) -> bool:
        async with self._lock:
            hashed = self._lookup(user)
            ok = await asyncio.to_thread(self._verify, password, hashed)
        self._cache[key] = ok
        if len(self._cache) > AUTH_CACHE_SIZE:
            self._cache.popitem(last=False)
        return ok


def parse_basic_authorization(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) of an `Authorization: Basic …` header; None if it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
