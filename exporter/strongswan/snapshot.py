"""A plain snapshot of charon's state: what one scrape saw, no metric objects.

Times are absolute (seconds since the epoch) so a snapshot means the same whenever it is
rendered; VICI reports ages, `parse` turns them into timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Version:
    daemon: str
    version: str
    sysname: str
    release: str
    machine: str


@dataclass(frozen=True, slots=True)
class DaemonStats:
    start_time: float | None
    workers_total: int
    workers_idle: int
    workers_active: dict[str, int]
    queued_jobs: dict[str, int]
    scheduled_jobs: int
    ike_sas_total: int
    ike_sas_half_open: int


@dataclass(frozen=True, slots=True)
class ChildSA:
    name: str
    uniqueid: str
    reqid: str
    state: str
    mode: str
    protocol: str
    encap: bool
    encr_alg: str
    integ_alg: str
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    installed_at: float | None
    #: The SPIs of its inbound and outbound SA (VICI's "spi-in"/"spi-out", hex), as the
    #: kernel's XFRM states carry them; None when charon did not say.
    spi_in: int | None = None
    spi_out: int | None = None


@dataclass(frozen=True, slots=True)
class IkeSA:
    conn: str
    uniqueid: str
    version: str
    state: str
    local_host: str
    remote_host: str
    remote_id: str
    #: XAuth or EAP identity when there is one, else the remote IKE identity.
    user: str
    encr_alg: str
    integ_alg: str
    prf_alg: str
    dh_group: str
    established_at: float | None
    remote_vips: tuple[str, ...]
    children: tuple[ChildSA, ...]


@dataclass(frozen=True, slots=True)
class Connection:
    name: str
    #: "IKEv1", "IKEv2" or "IKEv1/2" as charon names it.
    version: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    base: str
    size: int
    online: int
    offline: int


@dataclass(frozen=True, slots=True)
class Certificate:
    type: str
    flag: str
    subject: str
    serial: str
    not_before: float
    not_after: float
    has_private_key: bool


@dataclass(frozen=True, slots=True)
class StrongswanSnapshot:
    taken_at: float
    version: Version
    stats: DaemonStats
    ike_sas: tuple[IkeSA, ...]
    connections: tuple[Connection, ...]
    pools: tuple[Pool, ...]
    certificates: tuple[Certificate, ...]
    #: Global IKE counters from the counters plugin; None when the plugin is not loaded.
    counters: dict[str, int] | None = None
    #: Certificates charon listed that could not be read, so a bad one is visible.
    unreadable_certificates: int = 0
