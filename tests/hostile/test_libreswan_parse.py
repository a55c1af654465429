"""Libreswan's status parsers (exporter.libreswan.parse) on text pluto does not print.

The recordings of real pluto 4.10 and 5.2 (tests/fixtures/libreswan/) are cut, reordered,
spliced, given unknown keys, huge numbers and undecodable bytes (decoded with
errors="replace", as the runner decodes them), and the parsers also get garbage and
nothing. Contract (parse.py's docstring): lines that fit no form are skipped and counted,
never raised on; numbers stay exact. And the property that matters for the ledger: no SA
is invented, every SA read names a serial whose `#N:` line is in the text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.libreswan.parse import (
    MAX_LINE,
    combine,
    parse_connections,
    parse_globalstatus,
    parse_showstates,
    parse_trafficstatus,
    parse_version,
)

from .helpers import HOSTILE, no_hang

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "libreswan"
COMMANDS = ("trafficstatus", "showstates", "status", "globalstatus", "version")


def recorded(release: str, command: str) -> str:
    return (FIXTURES / release / f"{command}.txt").read_bytes().decode("utf-8", errors="replace")


RECORDED_LINES = sorted(
    {
        line
        for release in ("bookworm", "trixie")
        for command in COMMANDS
        for line in recorded(release, command).splitlines()
    }
)
TRAFFIC_LINES = [
    line
    for release in ("bookworm", "trixie")
    for line in recorded(release, "trafficstatus").splitlines()
]


def parse_all(text: str) -> None:
    """Every parser on `text`, and the combination; checks the no-invention property."""
    traffic = parse_trafficstatus(text)
    states = parse_showstates(text)
    conns = parse_connections(text)
    counters = parse_globalstatus(text)
    parse_version(text)
    combine(
        taken_at=0.0,
        version="",
        traffic=traffic,
        states=states,
        connections=conns,
        counters=counters,
    )
    lines = [ln for ln in text.split("\n") if ln.strip()]
    # Each line gives at most one SA or is skipped (blank ones, `000 ` too, neither).
    assert len(traffic.sas) + traffic.skipped <= len(lines)
    serials_shown = {int(n) for n in re.findall(r"#(\d{1,20}): ", text)}
    assert {sa.serial for sa in traffic.sas} <= serials_shown
    assert {sa.serial for sa in states.ike_sas} <= serials_shown
    assert set(states.children) <= serials_shown
    assert len(counters.counters) + counters.skipped <= len(lines)
    for key, value in counters.counters.items():
        shown = re.search(rf"(?m)^(?:\d{{3,5}} )?{re.escape(key)}=(-?\d+)\s*$", text)
        assert shown is not None and int(shown.group(1)) == value


lines = st.one_of(
    st.sampled_from(RECORDED_LINES),
    st.text(max_size=80),
    st.sampled_from(["", "000 ", "006 #", '#1: "', '"x":', "a=1", "a=b", "#9: pending "]),
)


@HOSTILE
@given(st.lists(lines, max_size=12))
@example([])
@example([""])
@example(["\x00\x00\x00"])
def test_spliced_recorded_lines_and_garbage(chosen: list[str]) -> None:
    with no_hang():
        parse_all("\n".join(chosen))


@HOSTILE
@given(st.binary(max_size=400))
@example(b'\xff\xfe006 #2: "l2tp-psk"[1] 1.2.3.4, type=ESP\xc3')
def test_undecodable_bytes(raw: bytes) -> None:
    with no_hang():
        parse_all(raw.decode("utf-8", errors="replace"))


@HOSTILE
@given(st.sampled_from(RECORDED_LINES), st.integers(min_value=0, max_value=400), st.binary())
def test_recorded_lines_cut_and_spliced_with_bytes(line: str, at: int, junk: bytes) -> None:
    text = line[:at] + junk.decode("utf-8", errors="replace") + line[at:]
    with no_hang():
        parse_all(text)
        parse_all(line[:at])


@pytest.mark.parametrize("line", TRAFFIC_LINES)
def test_every_cut_of_a_traffic_line(line: str) -> None:
    """A cut line is skipped or read as the same SA: its serial, connection and peer.
    Cut silently, a count may read as a prefix of its digits (nothing tells the parser);
    cut as pluto cuts (`...` at the end), the cut field is dropped, so every count read
    is the true one or absent (0), never a smaller number."""
    (whole,) = parse_trafficstatus(line).sas
    for at in range(len(line) + 1):
        for marked, cut in ((False, line[:at]), (True, line[:at] + "...")):
            for sa in parse_trafficstatus(cut).sas:
                assert (sa.serial, sa.connection, sa.instance) == (
                    whole.serial,
                    whole.connection,
                    whole.instance,
                )
                assert whole.peer.startswith(sa.peer)
                for got, true in ((sa.in_bytes, whole.in_bytes), (sa.out_bytes, whole.out_bytes)):
                    if marked:
                        assert got in (0, true), cut
                    else:
                        assert got == 0 or str(true).startswith(str(got)), cut


@HOSTILE
@given(st.sampled_from(TRAFFIC_LINES), st.randoms(use_true_random=False))
def test_reordered_fields_and_unknown_keys(line: str, rnd: random.Random) -> None:
    head, _, rest = line.partition(", ")
    fields = rest.split(", ")
    fields.insert(rnd.randrange(len(fields) + 1), "newkey=some value")
    rnd.shuffle(fields)
    (whole,) = parse_trafficstatus(line).sas
    (again,) = parse_trafficstatus(head + ", " + ", ".join(fields)).sas
    assert again == whole


@pytest.mark.parametrize("exponent", [63, 64, 128, 1000])
def test_huge_numbers_stay_exact(exponent: int) -> None:
    big = 2**exponent
    (sa,) = parse_trafficstatus(
        f'#{2**64}: "c"[{2**64 - 1}] 192.0.2.1, type=ESP, add_time={big}, inBytes={big},'
        f" outBytes={big + 1}, id='x'"
    ).sas
    assert (sa.serial, sa.instance) == (2**64, 2**64 - 1)
    assert (sa.in_bytes, sa.out_bytes) == (big, big + 1)
    assert sa.added_at is None  # no epoch time is 2^63 s
    counters = parse_globalstatus(f"total.ipsec.traffic.in={big}\n").counters
    assert counters == {"total.ipsec.traffic.in": big}


def test_numbers_beyond_any_pluto_form_are_skipped_not_raised() -> None:
    digits = "9" * 5000  # past int()'s default string conversion limit
    text = f'#1: "c", type=ESP, inBytes={digits}\nkey={digits}\n#{digits}: "c", type=ESP'
    with no_hang():
        traffic = parse_trafficstatus(text)
        counters = parse_globalstatus(text)
    assert traffic.sas == ()
    assert counters.counters == {}


def test_overlong_lines_are_skipped_in_bounded_time() -> None:
    line = '#1: "c"[1] ' + ":1" * (MAX_LINE * 50) + " STATE_MAIN_R3 (x);"
    with no_hang(seconds=2.0):
        assert parse_showstates(line).skipped == 1
        assert parse_trafficstatus(line).skipped == 1
        assert parse_connections('"c": ' + "..." * MAX_LINE).skipped == 1


def test_empty_and_garbage_invent_nothing() -> None:
    for text in ("", "\n\n", "000 \n000  \n", 'garbage\n#\n#x: y\n""', "\x00" * 100):
        assert parse_trafficstatus(text).sas == ()
        assert parse_showstates(text).ike_sas == ()
        assert parse_showstates(text).children == {}
        assert parse_connections(text).connections == ()
        assert parse_globalstatus(text).counters == {}
        assert parse_version(text) == ""


def test_skipped_lines_are_counted() -> None:
    text = recorded("trixie", "trafficstatus") + '#7: "l2tp-psk"[4] 192.0.2.1\nnoise\n'
    parsed = parse_trafficstatus(text)
    assert (len(parsed.sas), parsed.skipped) == (3, 2)
    states = parse_showstates(recorded("bookworm", "showstates") + "000 #8: garbage\n")
    assert (len(states.ike_sas), len(states.children), states.skipped) == (3, 3, 1)
    # A SAID line whose state line is missing has nothing to attach to.
    orphan = '#9: "l2tp-psk"[1] 192.0.2.1 esp.1@192.0.2.1 esp.2@192.0.2.2 Traffic: ESPin=0B'
    assert parse_showstates(orphan).skipped == 1
    assert parse_connections('"x"[1]:   policy: IKEv1;\n"y: nope').skipped == 2
