"""Churn (issue 19): IKEv1 and IKEv2 clients of a real charon 5.9.8 server (netns lab,
kernel-libipsec) disconnect politely, are killed, disconnect and reconnect, rekey and
reauthenticate, each by its own seeded random script, all at once; the exporter runs with
its defaults (10 s reauthentication grace).

The clients' own log of what they did is the reference: the exporter's down counts equal
the SA ends the clients caused, its rekey counts the rekeys and reauthentications that
happened, and its up counts the SAs set up, exactly, per connection. One exception by
design (README, "What counts as a drop, a rekey, an up"): an IKEv2 client that deletes
its SA and comes back within the grace cannot be told from a break-before-make
reauthentication, so the IKEv2 scripts stay away longer than the grace; IKEv1 ones come
back at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter.demo.lab.topology import Client
from tests.conftest import Scrape, StartExporter
from tests.integration.test_ikev1_flap import GRACE, counts, established, grown, streaming

pytestmark = pytest.mark.lab

#: Seconds each client's script runs (actions that started go on to their end).
CHURN_SECONDS = 75.0
CLIENTS = ["nycmesh"] * 3 + ["ikev2-psk"] * 3
ACTIONS = {
    "nycmesh": ["disconnect", "flap", "kill", "reauth", "rekey-child"],
    "ikev2-psk": ["disconnect", "kill", "reauth", "rekey-ike", "rekey-child"],
}


def sas(client: Client) -> list[dict[str, Any]]:
    """The client's own IKE SAs (its charon's listing)."""
    return [sa for section in client.charon.list_sas() for sa in section.values()]


def ike_ids(client: Client) -> set[str]:
    return {sa["uniqueid"] for sa in sas(client)}


def installed_child_ids(client: Client) -> set[str]:
    return {
        c["uniqueid"]
        for sa in sas(client)
        for c in sa.get("child-sas", {}).values()
        if c.get("state") == "INSTALLED"
    }


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


@dataclass
class Script:
    """One client's churn: what it did, in order (its log)."""

    client: Client
    server_sas: Any  # () -> the server's IKE SAs of this client
    rng: random.Random
    done: list[str] = field(default_factory=list)
    #: Actions after which pings did not pass within 15 s.
    slow_tunnel: list[str] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def conn(self) -> str:
        return self.client.conn

    def works(self) -> bool:
        try:
            return self.client.ping(1, timeout=1.0) == 1
        except Exception:
            return False

    def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                action = self.rng.choice(ACTIONS[self.conn])
                getattr(self, action.replace("-", "_"))()
                self.done.append(action)
                try:
                    wait_until(self.works, 15, "the tunnel")
                except AssertionError:
                    # Seen after IKEv1 reauthentications: the client's virtual IP route
                    # comes back late (the SAs are up; counting is what is tested here).
                    self.slow_tunnel.append(action)
                time.sleep(self.rng.uniform(0.2, 1.5))
        except BaseException as e:  # reported by the test
            self.error = e

    # -- what a client does ---------------------------------------------------------------

    def disconnect(self) -> None:
        """Polite: the client deletes its SAs; back after a while (IKEv2: past the grace,
        or it would be taken for a break-before-make reauthentication)."""
        self.client.disconnect()
        time.sleep(GRACE + 1 if self.conn == "ikev2-psk" else self.rng.uniform(1, 3))
        self.client.connect()

    def flap(self) -> None:
        """IKEv1: delete, and set up again at once (well within a second here)."""
        self.client.disconnect()
        self.client.connect()

    def kill(self) -> None:
        """The client dies (SIGKILL); the server finds out by DPD; it starts again."""
        self.client.charon.kill()
        wait_until(lambda: not self.server_sas(), 30, f"{self.client.netns}: DPD")
        self.client.charon.restart(hard=True)
        self.client.connect()

    def reauth(self) -> None:
        """IKEv1: make-before-break, the old IKE SA goes 10 s later; IKEv2 (charon's
        default): break-before-make."""
        (old,) = ike_ids(self.client)
        self.client.charon.swanctl("--rekey", "--ike-id", old, "--reauth")
        wait_until(lambda: ike_ids(self.client) - {old}, 20, "the new IKE SA")
        wait_until(lambda: old not in ike_ids(self.client), 30, "the old IKE SA's end")
        wait_until(lambda: len(self.server_sas()) == 1, 30, "the server's old IKE SA's end")

    def rekey_ike(self) -> None:
        (old,) = ike_ids(self.client)
        self.client.charon.swanctl("--rekey", "--ike-id", old)
        wait_until(lambda: ike_ids(self.client) - {old}, 20, "the rekeyed IKE SA")
        wait_until(lambda: old not in ike_ids(self.client), 20, "the old IKE SA's end")

    def rekey_child(self) -> None:
        (old,) = installed_child_ids(self.client)
        self.client.charon.swanctl("--rekey", "--child-id", old)
        wait_until(
            lambda: (
                installed_child_ids(self.client) - {old}
                and old not in installed_child_ids(self.client)
            ),
            20,
            "the rekeyed CHILD SA",
        )

    # -- what the exporter must have counted ---------------------------------------------

    def expected(self) -> Counter[str]:
        """Event counts this client's actions make (README, "What counts as a drop, a
        rekey, an up"), beyond the first up."""
        did = Counter(self.done)
        ends = did["disconnect"] + did["flap"] + did["kill"]
        out: Counter[str] = Counter(
            {
                "ike-down": ends,
                "child-down": ends,
                "ike-up": 1 + ends,
                "child-up": 1 + ends,
                "ike-rekey": did["reauth"] + did["rekey-ike"],
                "child-rekey": did["rekey-child"],
            }
        )
        if self.conn == "nycmesh":
            out["ike-up"] += did["reauth"]  # the new IKE SA adopts the CHILD SA
        else:
            out["child-rekey"] += did["reauth"]  # new CHILD SA within the grace
        return out


#: charon log lines that say why an SA ended or an exchange was given up (shown when the
#: counts differ: a server that gave up on a live client under load ends an SA no
#: client action ended).
SA_END_WORDS = ("giving up", "retransmit", "deleting", "closing", "reauth", "destroying")


def sa_ends(log_text: str, limit: int = 200) -> str:
    lines = [line for line in log_text.splitlines() if any(w in line for w in SA_END_WORDS)]
    return "\n".join(lines[-limit:])


def server_sas_of(lab: Any, address: str) -> Any:
    def listed() -> list[dict[str, Any]]:
        return [
            sa
            for section in lab.server.list_sas()
            for sa in section.values()
            if sa.get("remote-host") == address
        ]

    return listed


def test_churn_counts_every_drop_and_rekey_the_clients_caused(
    make_lab: Any, start_exporter: StartExporter
) -> None:
    lab = make_lab(CLIENTS, connect=False)
    exp = start_exporter(lab.server_uri)
    before = exp.wait_for(streaming)
    lab.connect_all()
    scripts: list[Script] = [
        Script(c, server_sas_of(lab, c.address), random.Random(19_000 + i))
        for i, c in enumerate(lab.clients)
    ]
    until = time.monotonic() + CHURN_SECONDS
    threads = [threading.Thread(target=x.run, args=(until,), daemon=True) for x in scripts]
    for t in threads:
        t.start()
    scrapes = 0
    while any(t.is_alive() for t in threads):
        exp.scrape()  # scrapes (and listings) go on through the churn
        scrapes += 1
        time.sleep(1.0)
    for t in threads:
        t.join()
    errors = [f"{x.client.netns}: {x.error!r}" for x in scripts if x.error is not None]
    assert not errors, errors

    wanted: dict[str, Counter[str]] = {}
    for script in scripts:
        wanted.setdefault(script.conn, Counter()).update(script.expected())
    log = {x.client.netns: x.done for x in scripts}
    for conn in ("nycmesh", "ikev2-psk"):
        did = Counter(a for x in scripts if x.conn == conn for a in x.done)
        assert did["disconnect"] + did["kill"] and did["reauth"], (conn, log)

    start = {conn: counts(before, conn) for conn in wanted}

    def as_the_clients_did(s: Scrape) -> bool:
        return all(
            grown(counts(s, conn), start[conn]) == {k: v for k, v in want.items() if v}
            for conn, want in wanted.items()
        )

    try:
        s = exp.wait_for(as_the_clients_did, timeout=GRACE + 15)
        time.sleep(GRACE + 2)  # nothing more comes later
        s = exp.scrape()
        assert as_the_clients_did(s)
    except AssertionError:
        last = exp.scrape()
        got = {conn: grown(counts(last, conn), start[conn]) for conn in wanted}
        raise AssertionError(
            f"exporter {got}\nclients {dict(wanted)}\nlog {log}\n"
            f"slow tunnels {[(x.client.netns, x.slow_tunnel) for x in scripts]}\n"
            f"server's SA ends and give-ups:\n{sa_ends(lab.server.log_text())}"
        ) from None
    for conn in wanted:
        assert established(s, conn) == CLIENTS.count(conn)
    slow = {x.client.netns: x.slow_tunnel for x in scripts if x.slow_tunnel}
    print(f"churn: {log}; counts {dict(wanted)}; {scrapes} scrapes; slow tunnels {slow}")
