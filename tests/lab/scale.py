"""Many real IKE+CHILD SAs from few charons: a responder and initiators holding N connections.

LAB.md "Scale": no load-tester plugin here, so one initiator charon loads N connections with
distinct identities (``user<i>@scale``) and the responder accepts them all with one
connection (``remote { id = *@scale }``). Every CHILD SA gets its own /32 on both sides
(``10.128.x.y`` on the initiator, ``10.129.x.y`` on the responder), so the routes
kernel-libipsec installs never collide; all those addresses are added to ``lo`` *before*
the charons start (thousands of address events would otherwise flood charon's
kernel-netlink at run time).

Topology: the responder's namespace holds a bridge with 10.99.0.1; initiator ``k`` is its
own namespace on a veth with 10.99.0.(2+k). Several initiators exist so a test can kill one
(its SAs then die by DPD on the responder) while the others live on.

    with ScaleLab([1000]) as lab:
        lab.bring_up(1000)          # SAs 0..999 from initiator 0
        print(lab.server.uri)

SA ``i`` has connection ``s<i>`` (child ``s<i>``) on its initiator; on the responder it is
connection ``scale`` (IKEv2) or ``scale-v1`` (IKEv1), child of the same name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from exporter.demo.lab import netns
from exporter.demo.lab.base import BRIDGE, NamespaceLab
from exporter.demo.lab.charon import Charon, CharonError
from exporter.demo.lab.configs import ESP_PROPOSALS, IKE_PROPOSALS, PSK, SERVER_ADDR, SUBNET_PREFIX

CLIENT_NET = ipaddress.ip_network("10.128.0.0/16")
SERVER_NET = ipaddress.ip_network("10.129.0.0/16")
MAX_SAS = CLIENT_NET.num_addresses - 2
SERVER_CONNS = {2: "scale", 1: "scale-v1"}
ID_DOMAINS = {2: "scale", 1: "v1.scale"}

Version = Literal[1, 2]


def client_ts(i: int) -> str:
    """The initiator-side /32 of SA ``i`` (its CHILD SA's local traffic selector)."""
    return str(CLIENT_NET.network_address + 1 + i)


def server_ts(i: int) -> str:
    """The responder-side /32 of SA ``i``."""
    return str(SERVER_NET.network_address + 1 + i)


def identity(i: int, version: Version = 2) -> str:
    return f"user{i}@{ID_DOMAINS[version]}"


def conn_name(i: int) -> str:
    return f"s{i}"


def initiator_addr(k: int) -> str:
    return f"10.99.0.{2 + k}"


def server_swanctl_conf(dpd_delay: str | None = None) -> str:
    """The responder: ``scale`` (IKEv2) and ``scale-v1`` (IKEv1 Main Mode), PSK, any
    ``*@scale`` / ``*@v1.scale`` identity, CHILD SAs narrowed to one /32 pair each."""
    dpd = f"    dpd_delay = {dpd_delay}\n" if dpd_delay else ""
    conns = ""
    for version, name in SERVER_CONNS.items():
        conns += f"""\
  {name} {{
    version = {version}
    proposals = {IKE_PROPOSALS}
    send_certreq = no
{dpd}    local {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    remote {{
      auth = psk
      id = *@{ID_DOMAINS[version]}
    }}
    children {{
      {name} {{
        local_ts = {SERVER_NET}
        remote_ts = {CLIENT_NET}
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
"""
    return f"""\
connections {{
{conns}}}
secrets {{
  ike-any {{
    secret = {PSK}
  }}
}}
"""


INITIATOR_SWANCTL_CONF = f"""\
secrets {{
  ike-server {{
    id = {SERVER_ADDR}
    secret = {PSK}
  }}
}}
"""


def client_conn(
    i: int, version: Version = 2, *, start: bool = True, dpd_delay: str | None = None
) -> dict[str, Any]:
    """``load-conn`` message of SA ``i`` on its initiator. ``start``: charon initiates it
    as soon as it is loaded (``start_action = start``)."""
    name = conn_name(i)
    conn: dict[str, Any] = {
        "version": str(version),
        "remote_addrs": [SERVER_ADDR],
        "proposals": IKE_PROPOSALS.split(","),
        "send_certreq": "no",
        "local-1": {"auth": "psk", "id": identity(i, version)},
        "remote-1": {"auth": "psk", "id": SERVER_ADDR},
        "children": {
            name: {
                "local_ts": [f"{client_ts(i)}/32"],
                "remote_ts": [f"{server_ts(i)}/32"],
                "esp_proposals": ESP_PROPOSALS.split(","),
                "mode": "tunnel",
                "start_action": "start" if start else "none",
            }
        },
    }
    if dpd_delay:
        conn["dpd_delay"] = dpd_delay
    return {name: conn}


@dataclass
class Initiator:
    """One initiator namespace and charon, owning SAs ``first .. first+count-1``."""

    index: int
    netns: str
    charon: Charon
    first: int
    count: int

    def owns(self, i: int) -> bool:
        return self.first <= i < self.first + self.count


class ScaleLab(NamespaceLab):
    """A responder charon and ``len(sizes)`` initiator charons; initiator ``k`` can hold up
    to ``sizes[k]`` SAs (their addresses are added before any charon starts).

    ``dpd_delay`` (e.g. ``"2s"``) turns on DPD on the responder's connections, so a killed
    initiator's SAs go away within seconds. Use as a context manager, or :meth:`start` and
    :meth:`close` (close always cleans up, also after a failed start).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        dpd_delay: str | None = None,
        keep_workdir: bool = False,
    ) -> None:
        if not sizes or sum(sizes) > MAX_SAS:
            raise ValueError(f"between 1 and {MAX_SAS} SAs in all")
        super().__init__(server_kernel="kernel-libipsec", keep_workdir=keep_workdir)
        self.sizes = list(sizes)
        self.dpd_delay = dpd_delay
        self.initiators: list[Initiator] = []
        first = 0
        for k, size in enumerate(self.sizes):
            ns = f"{self.prefix}i{k}"
            charon = Charon(
                f"i{k}", ns, self.workdir / f"i{k}", kernel="kernel-libipsec", server=False
            )
            self.initiators.append(Initiator(k, ns, charon, first, size))
            first += size
        #: SA indexes whose connection is loaded on their initiator.
        self.loaded: set[int] = set()
        self.versions: dict[int, Version] = {}

    @property
    def capacity(self) -> int:
        return sum(self.sizes)

    def initiator_of(self, i: int) -> Initiator:
        for ini in self.initiators:
            if ini.owns(i):
                return ini
        raise IndexError(f"SA {i} is beyond the lab's {self.capacity}")

    # -- lifecycle ---------------------------------------------------------------------------

    def charons(self) -> list[Charon]:
        return [ini.charon for ini in self.initiators] + [self.server]

    def _build(self) -> None:
        t0 = time.monotonic()
        self._server_bridge()
        self._add_lo_addresses(self.server_ns, (server_ts(i) for i in range(self.capacity)))
        for ini in self.initiators:
            self._namespace(ini.netns)
            netns.add_veth(self.server_ns, f"i{ini.index}", ini.netns, "eth0", bridge_a=BRIDGE)
            netns.add_address(ini.netns, "eth0", f"{initiator_addr(ini.index)}/{SUBNET_PREFIX}")
            self._add_lo_addresses(
                ini.netns, (client_ts(i) for i in range(ini.first, ini.first + ini.count))
            )
        self.timings["addresses"] = time.monotonic() - t0
        self.server.start()
        self.server.load(server_swanctl_conf(self.dpd_delay))
        for ini in self.initiators:
            ini.charon.start()
            ini.charon.load(INITIATOR_SWANCTL_CONF)
        self.timings["start"] = time.monotonic() - t0

    def _add_lo_addresses(self, ns: str, addresses: Iterable[str]) -> None:
        """All /32s on ``lo`` in one ``ip -batch`` (thousands of ``ip`` runs take minutes)."""
        batch = self.workdir / f"addrs-{ns}.batch"
        batch.write_text("".join(f"address add {a}/32 dev lo\n" for a in addresses))
        netns.run(["ip", "-n", ns, "-batch", str(batch)], timeout=300)
        batch.unlink()

    # -- SAs ---------------------------------------------------------------------------------

    def server_counts(self) -> tuple[int, int]:
        """(IKE SAs, half-open IKE SAs) from the responder's ``stats`` (cheap at any size)."""
        stats = self.server.call("stats")
        ikesas = stats.get("ikesas", {})
        return int(ikesas.get("total", 0)), int(ikesas.get("half-open", 0))

    def load(self, indexes: Iterable[int], *, version: Version = 2, start: bool = True) -> None:
        """Load the connections of SAs ``indexes`` on their initiators (``start``: and
        initiate them right away)."""
        by_initiator: dict[int, list[int]] = {}
        for i in indexes:
            by_initiator.setdefault(self.initiator_of(i).index, []).append(i)
        for k, todo in by_initiator.items():
            with self.initiators[k].charon.session(timeout=60) as s:
                for i in todo:
                    s.load_conn(client_conn(i, version, start=start, dpd_delay=self.dpd_delay))
                    self.loaded.add(i)
                    self.versions[i] = version

    def bring_up(
        self, n: int, *, wave: int = 250, version: Version = 2, timeout: float = 600.0
    ) -> None:
        """Bring SAs ``0 .. n-1`` up (those not loaded yet), ``wave`` at a time, each wave
        once the responder has no half-open IKE SA left; then check on the responder that
        every one has an ESTABLISHED IKE SA with an INSTALLED CHILD SA, and initiate again
        those that have not (a lost IKE_SA_INIT under load)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        todo = [i for i in range(n) if i not in self.loaded]
        for start in range(0, len(todo), wave):
            chunk = todo[start : start + wave]
            self.load(chunk, version=version)
            expected = len(self.loaded)
            while time.monotonic() < deadline:
                total, half_open = self.server_counts()
                if total >= expected and half_open == 0:
                    break
                time.sleep(0.1)
            else:
                raise CharonError(f"bring-up: {n} SAs not up within {timeout}s")
        for _ in range(3):
            missing = self.missing(range(n))
            if not missing:
                break
            for i in missing:
                conn = conn_name(i)
                with contextlib.suppress(CharonError):
                    self.initiator_of(i).charon.initiate(conn, conn, timeout=15)
        else:
            missing = self.missing(range(n))
            if missing:
                raise CharonError(f"bring-up: {len(missing)} of {n} SAs not up: {missing[:10]}")
        self.timings[f"bring_up_{n}"] = time.monotonic() - t0

    def established(self) -> dict[str, int]:
        """Identity -> number of ESTABLISHED IKE SAs with an INSTALLED CHILD SA, as the
        responder lists them."""
        up: dict[str, int] = {}
        for section in self.server.list_sas():
            for sa in section.values():
                if sa.get("state") != "ESTABLISHED":
                    continue
                children = sa.get("child-sas", {}).values()
                if any(c.get("state") == "INSTALLED" for c in children):
                    rid = sa.get("remote-id", "")
                    up[rid] = up.get(rid, 0) + 1
        return up

    def missing(self, indexes: Iterable[int]) -> list[int]:
        up = self.established()
        return [i for i in indexes if identity(i, self.versions.get(i, 2)) not in up]

    def wait_up(self, indexes: Iterable[int], timeout: float = 30.0) -> None:
        """Wait (wall clock) until SAs ``indexes`` are ESTABLISHED with a CHILD SA
        INSTALLED on the responder (small labs: this lists every SA each time)."""
        todo = list(indexes)
        deadline = time.monotonic() + timeout
        while True:
            missing = self.missing(todo)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise CharonError(f"SAs {missing} not up within {timeout}s")
            time.sleep(0.2)

    def sa_ids(self) -> dict[str, tuple[str, list[str]]]:
        """Identity -> (IKE uniqueid, CHILD uniqueids) of the responder's IKE SAs; with
        several IKE SAs of one identity, the newest (highest uniqueid) wins."""
        found: dict[str, tuple[str, list[str]]] = {}
        for section in self.server.list_sas():
            for sa in section.values():
                rid, uid = sa.get("remote-id", ""), sa.get("uniqueid", "0")
                if rid in found and int(found[rid][0]) > int(uid):
                    continue
                children = [c.get("uniqueid", "") for c in sa.get("child-sas", {}).values()]
                found[rid] = (uid, children)
        return found

    def logs(self) -> dict[str, str]:
        """Each charon's log text, by name (for failing tests)."""
        return {
            c.name: c.log_text() for c in [self.server] + [ini.charon for ini in self.initiators]
        }
