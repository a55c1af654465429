"""The Libreswan ledger's rules over hand-built rounds: rekey (make-before-break, a newer
serial of the same instance and peer), drop, break-before-make reconnect, pluto restart,
and traffic totals that never go backwards. The recorded rounds of real pluto are replayed
in test_libreswan_collector.py."""

from __future__ import annotations

from dataclasses import replace

from exporter.libreswan.ledger import PlutoLedger, Traffic
from exporter.libreswan.model import IpsecSa, PlutoSnapshot


def sa(serial: int, instance: int = 1, peer: str = "192.0.2.1", **kw: object) -> IpsecSa:
    base = IpsecSa(
        serial=serial,
        connection="l2tp-psk",
        instance=instance,
        peer=peer,
        username=None,
        identity=peer,
        lease=None,
        added_at=1000.0 + serial,
        in_bytes=100,
        out_bytes=200,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def round_(*sas: IpsecSa, at: float = 2000.0) -> PlutoSnapshot:
    return PlutoSnapshot(
        taken_at=at, version="5.2", ipsec_sas=tuple(sas), ike_sas=(), connections=()
    )


def events(ledger: PlutoLedger) -> dict[str, int]:
    return {e: n for (c, e), n in ledger.readings().events.items() if c == "l2tp-psk"}


def test_the_first_round_is_the_baseline() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2), sa(4, instance=2, peer="192.0.2.2")))
    assert events(ledger) == {"up": 0}


def test_a_newer_sa_of_the_same_instance_is_a_rekey_not_a_drop() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2)))
    ledger.observe(round_(sa(2), sa(7)))  # the replacement is up first
    ledger.observe(round_(sa(7)))  # then the old one goes
    assert events(ledger) == {"up": 0, "rekey": 1}


def test_rekey_seen_in_one_round() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2)))
    ledger.observe(round_(sa(7)))
    assert events(ledger) == {"up": 0, "rekey": 1}


def test_an_sa_gone_without_replacement_is_a_drop() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2), sa(4, instance=2, peer="192.0.2.2")))
    ledger.observe(round_(sa(4, instance=2, peer="192.0.2.2")))
    assert events(ledger) == {"up": 0, "down": 1}
    assert ledger.readings().last_change["l2tp-psk"] == 2000.0


def test_break_before_make_reconnect_is_a_drop_and_an_up() -> None:
    # A client that disconnects and connects again gets a new instance from the template.
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2, instance=1)))
    ledger.observe(round_(sa(6, instance=3)))
    assert events(ledger) == {"up": 1, "down": 1}


def test_a_restarted_pluto_numbers_from_one_again() -> None:
    # Same instance, same peer, a lower serial: not a replacement of the old SA.
    ledger = PlutoLedger()
    ledger.observe(round_(sa(8)))
    ledger.observe(round_(sa(2, added_at=5000.0, in_bytes=10, out_bytes=20)))
    assert events(ledger) == {"up": 1, "down": 1}
    # The same serial with another install time is another SA, too.
    ledger.observe(round_(sa(2, added_at=6000.0, in_bytes=1, out_bytes=2)))
    assert events(ledger) == {"up": 2, "down": 2}


def test_traffic_totals_keep_ended_sas_and_never_go_backwards() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2, in_bytes=1000, out_bytes=2000)))
    before = ledger.readings().connection_traffic["l2tp-psk"]
    assert before == Traffic(1000, 2000)
    # Rekeyed: the new SA starts from zero; the old one's bytes stay in the total.
    ledger.observe(round_(sa(7, in_bytes=10, out_bytes=20)))
    after = ledger.readings().connection_traffic["l2tp-psk"]
    assert after == Traffic(1010, 2020)
    users = ledger.readings().user_traffic
    assert users[("l2tp-psk", "192.0.2.1")] == Traffic(1010, 2020)


def test_the_kernels_final_count_replaces_the_last_reading() -> None:
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2, in_bytes=1000, out_bytes=2000)))
    ledger.record_final(2, Traffic(1500, 2600))
    ledger.observe(round_())
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(1500, 2600)
    # A final below what was already shown never lowers the total.
    ledger.observe(round_(sa(9, instance=4, in_bytes=50, out_bytes=50)))
    ledger.record_final(9, Traffic(1, 1))
    ledger.observe(round_())
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(1550, 2650)


def test_users_beyond_the_cap_are_counted_not_kept() -> None:
    ledger = PlutoLedger(max_users=1)
    ledger.observe(round_(sa(2), sa(4, instance=2, peer="192.0.2.2")))
    ledger.observe(round_())
    readings = ledger.readings()
    assert len(readings.user_traffic) == 1
    assert readings.untracked_users == 1
    # The connection total still has both.
    assert readings.connection_traffic["l2tp-psk"] == Traffic(200, 400)


def test_plutos_totals_continue_across_its_restart() -> None:
    ledger = PlutoLedger()
    counted = {"total.ike.ikev1.established": 3, "total.ike.dpd.sent": 20}
    ledger.observe(replace(round_(), global_counters=counted))
    assert ledger.readings().global_counters == counted
    # pluto restarted: its own totals start from zero again.
    ledger.observe(
        replace(
            round_(), global_counters={"total.ike.ikev1.established": 1, "total.ike.dpd.sent": 0}
        )
    )
    assert ledger.readings().global_counters == {
        "total.ike.ikev1.established": 4,
        "total.ike.dpd.sent": 20,
    }


def test_a_32_bit_inbytes_wrap_and_a_missing_reading_never_lower_the_total() -> None:
    # pluto 4.10 prints inBytes with %u (programs/pluto/state.c, jam_state_traffic).
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2, in_bytes=2**32 - 100, out_bytes=10)))
    ledger.observe(round_(sa(2, in_bytes=50, out_bytes=20)))  # wrapped: 150 more
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(2**32 + 50, 20)
    ledger.observe(round_(sa(2, in_bytes=0, out_bytes=0)))  # the kernel did not answer
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(2**32 + 50, 20)
    ledger.observe(round_(sa(2, in_bytes=80, out_bytes=25)))
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(2**32 + 80, 25)
    ledger.observe(round_())  # it ended: the total keeps it all
    assert ledger.readings().connection_traffic["l2tp-psk"] == Traffic(2**32 + 80, 25)


def test_an_install_time_first_unknown_is_the_same_sa() -> None:
    # Seen in the guest: pluto 5.2 reported a new SA with add_time=0, then its real time;
    # that counted a down and an up for one SA.
    ledger = PlutoLedger()
    ledger.observe(round_(sa(2)))
    ledger.observe(round_(sa(2), sa(3, added_at=None)))
    ledger.observe(round_(sa(3, added_at=1500.0)))
    assert events(ledger) == {"up": 0, "rekey": 1}
