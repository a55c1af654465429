"""From the text of Libreswan's `ipsec` status commands to the snapshot model (`model`).

Pure functions, no I/O: the unit tests replay recordings of real pluto (4.10 and 5.2)
through exactly this code. The forms follow pluto's printing code, not only what the
recordings show (v4.10 `state.c`/`connections.c`, v5.2 `whack_trafficstatus.c`,
`whack_showstates.c`, `whack_connectionstatus.c`, `pluto_stats.c`):

- 4.x whack copies each reply line with its numeric prefix (`000 ` comments, `006 `
  traffic lines; `globalstatus` comes raw); 5.x prints none. A leading `NNN ` is dropped
  from every line, so both dialects read alike.
- A connection is `"name"`, an instance `"name"[N]` (5.x nests `[N][M]`; the first
  number is kept), followed for instances by the peer's address as pluto prints it
  (`192.0.2.7`, `2001:db8::7` without brackets, `<address>` under `logip=no`, or the
  opportunistic `LOCAL=== ...REMOTE===CLIENT`).
- Lines pluto cut at its 1024-character line width end in `...`; the field that was cut
  is dropped, the fields before it are read.

Lines that fit no known form are skipped, never raised on: each parser returns how many
it skipped, so the collector can say so. Numbers stay exact `int`s however large.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from exporter.libreswan.model import Connection, IkeSa, IpsecSa, PlutoSnapshot

#: pluto's whack line prefix (3 digits; notification codes overflow to more).
_PREFIX = re.compile(r"\d{3,5} ")
#: No line of pluto's is longer (whack reads lines into a 4096-byte buffer); longer ones
#: are not pluto's and are skipped before any pattern runs on them.
MAX_LINE = 4096
#: jambuf's mark at the end of a line cut at LOG_WIDTH.
_CUT = "..."

_CONN = r'"(?P<name>[^"]*)"(?P<inst>(?:\[\d{1,20}\])*)'
_TRAFFIC = re.compile(r"#(?P<serial>\d{1,20}): " + _CONN + r"(?: (?P<suffix>[^,]*))?(?P<rest>,.*)?")
_STATE = re.compile(
    r"#(?P<serial>\d{1,20}): " + _CONN + r"(?: (?P<suffix>[^;]*?))?:(?P<port>\d{1,5})"
    r"(?:\(tcp\))? (?P<state>[A-Z][A-Z0-9_]*) \((?P<story>[^;]*)\);(?P<rest>.*)"
)
_DETAILS = re.compile(r"#(?P<serial>\d{1,20}): " + _CONN + r"(?P<mid>[^;]*?(?:;[^;]*?)?) Traffic:")
_PENDING = re.compile(r"#\d{1,20}: pending ")
_PARENT = re.compile(r" (?:ISAKMP|IKE) SA #(?P<serial>\d{1,20});")
#: A SAID: `esp.SPI@ADDR` (IPv4) or `esp:SPI@ADDR` (IPv6), SPI in hex without zeros.
_SAID = re.compile(r"(?<!\S)(?P<proto>esp|ah|comp)[.:](?P<spi>[0-9a-f]{1,8})@\S+")
_FIELD = re.compile(r", (?P<key>[A-Za-z_][A-Za-z0-9_.-]*)=")
#: Counts of any size stay exact; 1000 digits is far past any counter and far below
#: int()'s string conversion limit.
_NUMBER = re.compile(r"\d{1,1000}")
_CONN_LINE = re.compile(_CONN + r":(?P<rest>.*)")
_OWNED = re.compile(
    r"(?:newest|established) (?P<what>ISAKMP SA|IKE SA|IPsec SA|Child SA): #(?P<serial>\d{1,20})"
)
_POLICY = re.compile(r"\bpolicy: (?P<version>IKEv[12])\b")
_COUNTER = re.compile(r"(?P<key>[^\s=]{1,200})=(?P<value>-?\d{1,1000})")
_VERSION = (
    re.compile(r"\bpluto_version=(?P<v>[^\s,;]+)"),
    re.compile(r"\bLibreswan\s+[Uv]?(?P<v>\d[^\s/,;()]*)"),
)
_OCTALS = re.compile(r"(?:\\[0-7]{1,3})+")
_IPV4_PORT = re.compile(r"(?P<host>\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}")

#: pluto's established IKE SA states (CAT_ESTABLISHED_IKE_SA in ikev1_states.c and
#: ikev2_states.c of 4.10 and 5.2), the ones briefstatus counts as "authenticated".
_ESTABLISHED_IKE = frozenset(
    {
        "STATE_MAIN_I4", "STATE_MAIN_R3", "STATE_AGGR_I2", "STATE_AGGR_R2",
        "STATE_XAUTH_I0", "STATE_XAUTH_I1", "STATE_XAUTH_R0", "STATE_XAUTH_R1",
        "STATE_MODE_CFG_I1", "STATE_MODE_CFG_R1", "STATE_MODE_CFG_R2",
        "STATE_V2_ESTABLISHED_IKE_SA", "ESTABLISHED_IKE_SA",
    }
)  # fmt: skip
_ESTABLISHED_STORIES = ("IKE SA established", "ISAKMP SA established", "established IKE SA")


@dataclass(frozen=True, slots=True)
class ChildState:
    """What `showstates` says of one IPsec SA (IKEv1 Quick Mode state, IKEv2 Child SA)."""

    serial: int
    connection: str
    instance: int | None
    #: The peer's address when pluto names it (instances), else "".
    peer: str
    peer_port: int | None
    state: str
    #: "ikev1" or "ikev2" (from the state name).
    version: str
    #: The IKE SA it was negotiated under: shown only once it is established.
    ike_serial: int | None
    #: From the SAID line (`esp.SPI@peer esp.SPI@us`), ESP's before AH's before IPCOMP's;
    #: None until the SA is established.
    spi_in: str | None = None
    spi_out: str | None = None


class TrafficStatus(NamedTuple):
    sas: tuple[IpsecSa, ...]
    skipped: int


class ShowStates(NamedTuple):
    ike_sas: tuple[IkeSa, ...]
    #: IPsec SA serial → its state and SPIs.
    children: dict[int, ChildState]
    skipped: int


class ConnectionList(NamedTuple):
    connections: tuple[Connection, ...]
    skipped: int


class GlobalStatus(NamedTuple):
    counters: dict[str, int]
    skipped: int


def _lines(text: str) -> Iterator[str]:
    """The lines of an answer without whack's prefix and trailing blanks; the empty ones
    (separators) left out."""
    for raw in text.split("\n"):
        prefix = _PREFIX.match(raw)
        line = (raw[prefix.end() :] if prefix else raw).rstrip()
        if line:
            yield line


def _int(digits: str | None) -> int | None:
    if digits is None:
        return None
    try:
        return int(digits)
    except ValueError:  # beyond int's string conversion limit: not pluto's
        return None


def _instance(brackets: str) -> int | None:
    """`[3]` → 3; 5.x's nested `[1][2]` → 1 (the instance of the template, which
    holds the peer); no brackets → None."""
    if not brackets:
        return None
    return _int(brackets[1 : brackets.index("]")])


def _peer(suffix: str | None) -> str:
    """The peer's address from what follows `"name"[N]`, "" when pluto shows none."""
    if not suffix:
        return ""
    text = suffix.strip()
    if "..." in text:  # opportunistic: [LOCAL===] ...REMOTE[===CLIENT]
        text = text.split("...", 1)[1].split("===", 1)[0]
    if not text or text == "<address>" or any(c.isspace() for c in text):
        return ""
    return text


def _identity(text: str) -> str:
    """An id as pluto prints it (jam_sanitized_bytes: printable ASCII as is, other bytes
    as `\\ooo`): the escaped bytes of 0x80 and up are decoded as UTF-8, so a
    `CN=Jos\\303\\251` reads `CN=José`; control characters stay escaped, so a label
    never carries a raw newline."""

    def decode(match: re.Match[str]) -> str:
        out: list[str] = []
        high = bytearray()
        for escape in match.group(0).split("\\")[1:]:
            value = int(escape, 8)
            if value >= 0x80:
                high.append(value & 0xFF)
                continue
            if high:
                out.append(high.decode("utf-8", errors="replace"))
                high.clear()
            out.append("\\" + escape)
        if high:
            out.append(high.decode("utf-8", errors="replace"))
        return "".join(out)

    return _OCTALS.sub(decode, text)


def _lease(text: str) -> str:
    """`192.168.43.10/32` → `192.168.43.10`; a list (`a/32,b/128`) stays a list."""
    items = []
    for item in text.split(","):
        address, _, bits = item.partition("/")
        whole_host = (bits == "32" and ":" not in address) or (bits == "128" and ":" in address)
        items.append(address if whole_host else item)
    return ",".join(items)


def _fields(rest: str) -> dict[str, str] | None:
    """`, key=value, key='quoted, with commas', ...` → {key: value}, in any order.

    A quoted value ends at the quote that is followed by the next `, key=` or the end
    (pluto does not escape quotes inside ids). None when the text is not such a list or
    a key repeats. A line cut by pluto (`...` at its end) loses its last field only."""
    cut = rest.endswith(_CUT)
    if cut:
        rest = rest[: -len(_CUT)]
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _FIELD.match(rest, pos)
        if match is None:
            return None
        key, start = match.group("key"), match.end()
        if rest.startswith("'", start):
            end = _closing_quote(rest, start + 1)
            if end is None:
                if cut:  # the quoted value was cut: drop it
                    break
                return None
            value, pos = rest[start + 1 : end], end + 1
        else:
            following = _FIELD.search(rest, start)
            end = following.start() if following else len(rest)
            if following is None and cut:  # the last value was cut: drop it
                break
            value, pos = rest[start:end], end
        if key in fields:
            return None
        fields[key] = value
    return fields


def _closing_quote(text: str, start: int) -> int | None:
    at = text.find("'", start)
    while at != -1:
        if at + 1 == len(text) or _FIELD.match(text, at + 1):
            return at
        at = text.find("'", at + 1)
    return None


def parse_version(text: str) -> str:
    """Libreswan's version from `ipsec --version` ("Libreswan 5.2", older "Libreswan
    U3.32/K..."), or from `ipsec status` (`pluto_version=4.10`, the running daemon's,
    preferred when both are in the text); "" when neither is there."""
    for pattern in _VERSION:
        for line in _lines(text):
            if len(line) <= MAX_LINE and (match := pattern.search(line)):
                return match.group("v")
    return ""


def parse_trafficstatus(text: str) -> TrafficStatus:
    """`ipsec trafficstatus`: one IPsec SA per line.

    `#2: "l2tp-psk"[1] 192.0.2.7, username=U, type=ESP, add_time=T, inBytes=N,
    outBytes=N, maxBytes=2^63B, id='…', lease=10.0.0.5/32` (username only with XAuth,
    then no id; inBytes/outBytes only when the kernel answered pluto; lease only with a
    pool). A line needs its serial, connection and `type=`; the rest are optional, in
    any order, unknown keys ignored. `add_time=0` (pluto had not asked the kernel yet)
    is None. 4.x prints inBytes as a 32-bit unsigned, so it wraps at 4 GiB there."""
    sas: list[IpsecSa] = []
    skipped = 0
    for line in _lines(text):
        sa = _traffic_line(line) if len(line) <= MAX_LINE else None
        if sa is None:
            skipped += 1
        else:
            sas.append(sa)
    return TrafficStatus(tuple(sas), skipped)


def _traffic_line(line: str) -> IpsecSa | None:
    head = _TRAFFIC.fullmatch(line)
    if head is None or head.group("rest") is None:
        return None
    fields = _fields(head.group("rest"))
    if fields is None or "type" not in fields:
        return None
    numbers: dict[str, int] = {}
    for key in ("add_time", "inBytes", "outBytes"):
        if key in fields:
            if not _NUMBER.fullmatch(fields[key]):
                return None
            numbers[key] = int(fields[key])
    serial = _int(head.group("serial"))
    if serial is None:
        return None
    add_time = numbers.get("add_time", 0)
    return IpsecSa(
        serial=serial,
        connection=head.group("name"),
        instance=_instance(head.group("inst")),
        peer=_peer(head.group("suffix")),
        username=fields.get("username"),
        identity=_identity(fields["id"]) if "id" in fields else None,
        lease=_lease(fields["lease"]) if fields.get("lease") else None,
        added_at=float(add_time) if 0 < add_time < 2**63 else None,
        in_bytes=numbers.get("inBytes", 0),
        out_bytes=numbers.get("outBytes", 0),
    )


def _is_child(state: str, rest: str) -> bool:
    # IKEv1 Quick Mode, IKEv2 *CHILD* states (4.10's STATE_V2_IKE_AUTH_CHILD_*, 5.x's
    # NEW_CHILD_*/REKEY_CHILD_*/ESTABLISHED_CHILD_SA); an established IPsec SA also names
    # its parent ("ISAKMP SA #1;"), which catches one in a state of another name.
    return state.startswith("STATE_QUICK_") or "CHILD" in state or bool(_PARENT.search(rest))


def _ike_version(state: str) -> str:
    # 4.x: STATE_MAIN_*, STATE_V2_*; 5.x kept the STATE_ prefix for IKEv1 only.
    if state.startswith("STATE_") and not state.startswith("STATE_V2_"):
        return "ikev1"
    return "ikev2"


def parse_showstates(text: str) -> ShowStates:
    """`ipsec showstates`: the IKE SAs, and the IPsec SAs' details by serial.

    State lines: `#1: "conn"[1] 192.0.2.7:4500 STATE_MAIN_R3 (story); events; ...` (the
    port is the peer's; `(tcp)` may follow it; a permanent connection shows no address:
    `#1: "conn":500 ...`). An established IPsec SA's line names its IKE SA (`ISAKMP SA
    #1;`, `IKE SA #1;`) and is followed by its SAID line (`#2: "conn"[1] 192.0.2.7
    esp.SPI@peer esp.SPI@us Traffic: ESPin=2KB ...`). `pending` lines are known and
    ignored."""
    ike_sas: list[IkeSa] = []
    children: dict[int, ChildState] = {}
    spis: dict[int, tuple[str, str]] = {}
    skipped = 0
    for line in _lines(text):
        if len(line) > MAX_LINE:
            skipped += 1
            continue
        if (state := _STATE.fullmatch(line)) is not None:
            entry = _state_line(state)
            if entry is None:
                skipped += 1
            elif isinstance(entry, IkeSa):
                ike_sas.append(entry)
            else:
                children[entry.serial] = entry
        elif (details := _DETAILS.match(line)) is not None:
            pair = _spis(details.group("mid"))
            serial = _int(details.group("serial"))
            if pair is None or serial is None:
                skipped += 1
            else:
                spis[serial] = pair
        elif _PENDING.match(line) is None:
            skipped += 1
    for serial, (spi_in, spi_out) in spis.items():
        if serial in children:
            children[serial] = replace(children[serial], spi_in=spi_in, spi_out=spi_out)
        else:  # a SAID line without its state line: nothing to attach it to
            skipped += 1
    return ShowStates(tuple(ike_sas), children, skipped)


def _state_line(match: re.Match[str]) -> IkeSa | ChildState | None:
    serial, port = _int(match.group("serial")), _int(match.group("port"))
    if serial is None:
        return None
    state, rest = match.group("state"), match.group("rest")
    connection, instance = match.group("name"), _instance(match.group("inst"))
    peer = _peer(match.group("suffix"))
    version = _ike_version(state)
    if _is_child(state, rest):
        parent = _PARENT.search(rest)
        return ChildState(
            serial=serial,
            connection=connection,
            instance=instance,
            peer=peer,
            peer_port=port,
            state=state,
            version=version,
            ike_serial=_int(parent.group("serial")) if parent else None,
        )
    story = match.group("story")
    return IkeSa(
        serial=serial,
        connection=connection,
        instance=instance,
        peer=peer,
        peer_port=port,
        state=state,
        version=version,
        established=state in _ESTABLISHED_IKE or story.endswith(_ESTABLISHED_STORIES),
    )


def _spis(mid: str) -> tuple[str, str] | None:
    """(inbound, outbound) SPI from a SAID line: pluto prints each protocol's outbound
    SAID (at the peer) then its inbound one (at us)."""
    by_proto: dict[str, list[str]] = {}
    for said in _SAID.finditer(mid):
        by_proto.setdefault(said.group("proto"), []).append(said.group("spi"))
    for proto in ("esp", "ah", "comp"):
        pair = by_proto.get(proto)
        if pair is not None and len(pair) == 2:
            return pair[1], pair[0]
    return None


@dataclass
class _Conn:
    name: str
    instance: int | None
    peer: str | None = None
    template: bool = False
    topology: bool = False
    instantiated: bool = False
    version: str = ""
    sa_word: str = ""
    ike_serial: int | None = None
    ipsec_serial: int | None = None
    lines: int = 0


def parse_connections(status_text: str) -> ConnectionList:
    """The loaded connections from `ipsec status`'s connection list.

    Each connection's lines start `"name":` or `"name"[N]:`. Its first line is the
    topology (`"name": LOCAL...REMOTE; routing; ...`, one space after the colon; detail
    lines have more): a REMOTE of `%any` (or `%group`, `%opportunistic`) makes a
    template. An instance has `[N]` or `instantiated from: $M`. The version comes from
    `policy: IKEv1+...`; the established serials from 4.x's `newest ISAKMP SA: #1;
    newest IPsec SA: #2;` or 5.x's `established ISAKMP SA: #1; established IPsec SA:
    #2;` (IKEv2: `IKE SA`, `Child SA`). Lines of the other sections of `status` are not
    connection lines and are not counted as skipped; connection lines that fit no form,
    and those of a connection whose topology line is missing, are."""
    conns: dict[tuple[str, str], _Conn] = {}
    skipped = 0
    for line in _lines(status_text):
        if not line.startswith('"'):
            continue
        match = _CONN_LINE.fullmatch(line) if len(line) <= MAX_LINE else None
        if match is None:
            skipped += 1
            continue
        key = (match.group("name"), match.group("inst"))
        conn = conns.get(key)
        if conn is None:
            inst = match.group("inst")
            conn = conns[key] = _Conn(key[0], _instance(inst))
        conn.lines += 1
        _connection_line(conn, match.group("rest"))
    connections = []
    for (_, inst), conn in conns.items():
        if not conn.topology:
            skipped += conn.lines
            continue
        if inst or conn.instantiated:
            kind = "instance"
        elif conn.template:
            kind = "template"
        else:
            kind = "permanent"
        version = conn.version or {"ISAKMP SA": "ikev1", "IKE SA": "ikev2"}.get(conn.sa_word, "")
        connections.append(
            Connection(
                name=conn.name,
                instance=conn.instance,
                kind=kind,
                version=version,
                ike_serial=conn.ike_serial or 0,
                ipsec_serial=conn.ipsec_serial or 0,
                peer=conn.peer,
            )
        )
    return ConnectionList(tuple(connections), skipped)


def _connection_line(conn: _Conn, rest: str) -> None:
    if not conn.topology and rest.startswith(" ") and not rest.startswith("  "):
        topology = rest[1:].split(";", 1)[0]
        if "..." in topology:
            conn.topology = True
            remote = _remote_host(topology.split("...", 1)[1])
            conn.template = remote.startswith(("%any", "%group", "%opportunistic"))
            conn.peer = None if remote.startswith(("%", "<")) or not remote else remote
            return
    if "instantiated from:" in rest:
        conn.instantiated = True
    if not conn.version and (policy := _POLICY.search(rest)):
        conn.version = policy.group("version").lower()
    for owned in _OWNED.finditer(rest):
        what, serial = owned.group("what"), _int(owned.group("serial"))
        if what in ("ISAKMP SA", "IKE SA"):
            conn.sa_word = conn.sa_word or what
            if conn.ike_serial is None:
                conn.ike_serial = serial
        elif conn.ipsec_serial is None:
            conn.ipsec_serial = serial


def _remote_host(right: str) -> str:
    """The host of the right end of a topology: `[HOP---]HOST[<name>][[ID]][===CLIENT]`,
    HOST `192.0.2.7`, `2001:db8::7`, `[2001:db8::7]:4500`, `192.0.2.7:4500`, `%any`."""
    if "---" in right.split("===", 1)[0]:
        right = right.split("---", 1)[1]
    if right.startswith("["):
        return right[1 : right.find("]")] if "]" in right else ""
    host = re.split(r"\[|<|===", right, maxsplit=1)[0]
    if port := _IPV4_PORT.fullmatch(host):
        return port.group("host")
    return host


def parse_globalstatus(text: str) -> GlobalStatus:
    """`ipsec globalstatus`: `key=value` lines, integers kept exact however large. A line
    of another form, a value that is not an integer, and a repeated key (the first one
    counts) are skipped."""
    counters: dict[str, int] = {}
    skipped = 0
    for line in _lines(text):
        match = _COUNTER.fullmatch(line) if len(line) <= MAX_LINE else None
        if match is None or match.group("key") in counters:
            skipped += 1
            continue
        counters[match.group("key")] = int(match.group("value"))
    return GlobalStatus(counters, skipped)


def combine(
    *,
    taken_at: float,
    version: str,
    traffic: TrafficStatus,
    states: ShowStates,
    connections: ConnectionList,
    counters: GlobalStatus,
) -> PlutoSnapshot:
    """One snapshot from one round's parsed answers.

    Each IPsec SA of trafficstatus is completed from showstates by serial (its IKE SA,
    state, SPIs, the peer's port); an SA that ended between the two commands keeps
    those None. An SA or IKE SA of a permanent connection, for which neither command
    names the peer, takes the connection's remote host from `status`."""
    peers = {(c.name, c.instance): c.peer for c in connections.connections if c.peer}
    ipsec_sas = []
    for sa in traffic.sas:
        child = states.children.get(sa.serial)
        known = peers.get((sa.connection, sa.instance), "")
        peer = sa.peer or (child.peer if child else "") or known
        if child is not None:
            sa = replace(
                sa,
                ike_serial=child.ike_serial,
                state=child.state,
                spi_in=child.spi_in,
                spi_out=child.spi_out,
                peer_port=child.peer_port,
            )
        ipsec_sas.append(replace(sa, peer=peer) if peer != sa.peer else sa)
    ike_sas = tuple(
        ike if ike.peer else replace(ike, peer=peers.get((ike.connection, ike.instance), ""))
        for ike in states.ike_sas
    )
    return PlutoSnapshot(
        taken_at=taken_at,
        version=version,
        ipsec_sas=tuple(ipsec_sas),
        ike_sas=ike_sas,
        connections=connections.connections,
        global_counters=counters.counters,
        skipped_lines={
            "trafficstatus": traffic.skipped,
            "showstates": states.skipped,
            "status": connections.skipped,
            "globalstatus": counters.skipped,
        },
    )
