"""From decoded VICI answers (nested dicts of text) to the snapshot dataclasses (`snapshot`).

Pure functions: the golden tests feed recorded answers of a real charon through exactly
this code. Missing or malformed fields become neutral values instead of exceptions, as
charon versions differ in what they report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from exporter.strongswan.snapshot import (
    Certificate,
    ChildSA,
    Connection,
    DaemonStats,
    IkeSA,
    Pool,
    Version,
)
from exporter.strongswan.x509 import CertificateError, read_certificate

PRIORITIES = ("critical", "high", "medium", "low")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    if value.isascii():
        return value
    # The codec keeps undecodable bytes as surrogates (for binary values); labels need
    # valid UTF-8.
    return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _section(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _spi(value: Any) -> int | None:
    """An SPI as VICI gives it (hex digits, no 0x); None when missing or not hex."""
    if not isinstance(value, str) or not 0 < len(value) <= 8:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def _ago(now: float, seconds: Any) -> float | None:
    age = _int(seconds, default=-1)
    return None if age < 0 else now - age


def parse_version(answer: Mapping[str, Any]) -> Version:
    return Version(
        daemon=_str(answer.get("daemon")),
        version=_str(answer.get("version")),
        sysname=_str(answer.get("sysname")),
        release=_str(answer.get("release")),
        machine=_str(answer.get("machine")),
    )


def parse_start_time(since: str) -> float | None:
    """charon reports its start as local time, e.g. 'Nov 25 04:26:09 2026'."""
    try:
        return time.mktime(time.strptime(since, "%b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def parse_stats(answer: Mapping[str, Any]) -> DaemonStats:
    workers = _section(answer.get("workers"))
    active = _section(workers.get("active"))
    queues = _section(answer.get("queues"))
    ikesas = _section(answer.get("ikesas"))
    return DaemonStats(
        start_time=parse_start_time(_str(_section(answer.get("uptime")).get("since"))),
        workers_total=_int(workers.get("total")),
        workers_idle=_int(workers.get("idle")),
        workers_active={p: _int(active.get(p)) for p in PRIORITIES},
        queued_jobs={p: _int(queues.get(p)) for p in PRIORITIES},
        scheduled_jobs=_int(answer.get("scheduled")),
        ike_sas_total=_int(ikesas.get("total")),
        ike_sas_half_open=_int(ikesas.get("half-open")),
    )


def _parse_child(key: str, child: Mapping[str, Any], now: float) -> ChildSA:
    return ChildSA(
        # Keys are "<name>-<uniqueid>" since 5.4; the name field is authoritative.
        name=_str(child.get("name")) or key,
        uniqueid=_str(child.get("uniqueid")),
        reqid=_str(child.get("reqid")),
        state=_str(child.get("state")),
        mode=_str(child.get("mode")),
        protocol=_str(child.get("protocol")),
        encap=child.get("encap") == "yes",
        encr_alg=_str(child.get("encr-alg")),
        integ_alg=_str(child.get("integ-alg")),
        bytes_in=_int(child.get("bytes-in")),
        bytes_out=_int(child.get("bytes-out")),
        packets_in=_int(child.get("packets-in")),
        packets_out=_int(child.get("packets-out")),
        installed_at=_ago(now, child.get("install-time")),
        spi_in=_spi(child.get("spi-in")),
        spi_out=_spi(child.get("spi-out")),
    )


def user_of(sa: Mapping[str, Any]) -> str:
    """The identity a person logged in with: XAuth, then EAP, then the IKE identity."""
    return (
        _str(sa.get("remote-xauth-id"))
        or _str(sa.get("remote-eap-id"))
        or _str(sa.get("remote-id"))
    )


def parse_ike_sas(events: Iterable[Mapping[str, Any]], now: float) -> tuple[IkeSA, ...]:
    sas = []
    for event in events:
        for conn, raw in event.items():
            sa = _section(raw)
            children = _section(sa.get("child-sas"))
            sas.append(
                IkeSA(
                    conn=conn,
                    uniqueid=_str(sa.get("uniqueid")),
                    version=_str(sa.get("version")),
                    state=_str(sa.get("state")),
                    local_host=_str(sa.get("local-host")),
                    remote_host=_str(sa.get("remote-host")),
                    remote_id=_str(sa.get("remote-id")),
                    user=user_of(sa),
                    encr_alg=_str(sa.get("encr-alg")),
                    integ_alg=_str(sa.get("integ-alg")),
                    prf_alg=_str(sa.get("prf-alg")),
                    dh_group=_str(sa.get("dh-group")),
                    established_at=_ago(now, sa.get("established")),
                    remote_vips=_strs(sa.get("remote-vips")),
                    children=tuple(
                        _parse_child(key, _section(child), now) for key, child in children.items()
                    ),
                )
            )
    return tuple(sas)


#: One SA of a rekey event: the IKE SA's fields with the one CHILD SA, or None when
#: that half of the event could not be read.
RekeyedChild = tuple[IkeSA, ChildSA] | None


def parse_ike_rekeys(body: Mapping[str, Any], now: float) -> Iterator[tuple[IkeSA, IkeSA]]:
    """The (old, new) IKE SAs of an `ike-rekey` event; unreadable pairs are left out."""
    for conn, raw in body.items():
        old = parse_ike_sas([{conn: _section(raw).get("old", {})}], now)
        new = parse_ike_sas([{conn: _section(raw).get("new", {})}], now)
        if old and new:
            yield old[0], new[0]


def parse_child_rekeys(
    body: Mapping[str, Any], now: float
) -> Iterator[tuple[RekeyedChild, RekeyedChild]]:
    """The (old, new) CHILD SAs of a `child-rekey` event, each with its IKE SA."""
    for conn, raw in body.items():
        ike_fields = {k: v for k, v in _section(raw).items() if k != "child-sas"}
        for pair in _section(_section(raw).get("child-sas")).values():
            if isinstance(pair, Mapping):
                yield (
                    _rekeyed_child(conn, ike_fields, pair.get("old"), now),
                    _rekeyed_child(conn, ike_fields, pair.get("new"), now),
                )


def _rekeyed_child(
    conn: str, ike_fields: Mapping[str, Any], child: Any, now: float
) -> RekeyedChild:
    if not isinstance(child, Mapping):
        return None
    sas = parse_ike_sas([{conn: {**ike_fields, "child-sas": {"rekeyed": child}}}], now)
    if not sas or not sas[0].children:
        return None
    return sas[0], sas[0].children[0]


def parse_connections(events: Iterable[Mapping[str, Any]]) -> tuple[Connection, ...]:
    conns = []
    for event in events:
        for name, raw in event.items():
            conn = _section(raw)
            conns.append(
                Connection(
                    name=name,
                    version=_str(conn.get("version")),
                    local_addrs=_strs(conn.get("local_addrs")),
                    remote_addrs=_strs(conn.get("remote_addrs")),
                    children=tuple(_section(conn.get("children"))),
                )
            )
    return tuple(conns)


def parse_pools(answer: Mapping[str, Any]) -> tuple[Pool, ...]:
    pools = []
    for name, raw in answer.items():
        pool = _section(raw)
        if not pool:
            continue
        pools.append(
            Pool(
                name=name,
                base=_str(pool.get("base")),
                size=_int(pool.get("size")),
                online=_int(pool.get("online")),
                offline=_int(pool.get("offline")),
            )
        )
    return tuple(pools)


def certificate_bytes(value: Any) -> bytes:
    """Undo the codec's lossless text decoding for binary `data`."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    return b""


def parse_certificates(events: Iterable[Mapping[str, Any]]) -> tuple[tuple[Certificate, ...], int]:
    """Return the readable X.509 certificates and how many could not be read."""
    certs = []
    unreadable = 0
    for event in events:
        if _str(event.get("type")) != "X509":
            continue  # CRLs, attribute certificates and raw public keys have no subject/expiry
        try:
            facts = read_certificate(certificate_bytes(event.get("data")))
        except CertificateError:
            unreadable += 1
            continue
        certs.append(
            Certificate(
                type=_str(event.get("type")),
                flag=_str(event.get("flag")) or "NONE",
                subject=facts.subject,
                serial=facts.serial,
                not_before=facts.not_before,
                not_after=facts.not_after,
                has_private_key=event.get("has_privkey") == "yes",
            )
        )
    return tuple(certs), unreadable


def parse_counters(answer: Mapping[str, Any]) -> dict[str, int]:
    """Global counters from `get-counters` (they sit under the empty connection name)."""
    counters = _section(_section(answer.get("counters")).get(""))
    return {name: _int(value) for name, value in counters.items()}
