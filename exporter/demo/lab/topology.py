"""The lab: one server namespace with a bridge, client namespaces on veths, real charons.

Usable from pytest and from the ``demo`` command alike; it imports nothing from pytest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from exporter.demo.lab import certs, netns, traffic
from exporter.demo.lab.base import BRIDGE, NamespaceLab
from exporter.demo.lab.charon import Charon, CharonError
from exporter.demo.lab.configs import (
    SITE_B_PEER,
    SITE_B_SUBNET_HOST,
    SUBNET_PREFIX,
    TUNNEL_TARGET,
    ClientShape,
    ConnName,
    Kernel,
    client_swanctl_conf,
    server_swanctl_conf,
    site_peer_swanctl_conf,
)


@dataclass
class Client:
    """One client namespace with its own charon, initiating one server connection."""

    shape: ClientShape
    netns: str
    charon: Charon
    connected: bool = field(default=False)

    @property
    def conn(self) -> ConnName:
        return self.shape.conn

    @property
    def address(self) -> str:
        return self.shape.address

    def connect(self, *, check: bool = True, timeout: float = 15.0) -> bool:
        """Initiate the IKE and CHILD SA; with ``check=False`` return False on failure
        (e.g. the server cannot install the CHILD_SA) instead of raising."""
        try:
            self.charon.initiate(self.conn, self.conn, timeout=timeout)
        except CharonError:
            if check:
                raise
            return False
        self.connected = True
        return True

    def disconnect(self) -> None:
        self.charon.terminate(self.conn)
        self.connected = False

    def ping(self, count: int = 3, timeout: float = 1.0) -> int:
        """Echo requests through the tunnel to the server's /32; returns replies."""
        return traffic.ping(self.netns, TUNNEL_TARGET, count, timeout)

    def child_bytes(self) -> tuple[int, int]:
        """(bytes-in, bytes-out) of this client's CHILD_SAs, read over its VICI."""
        return self.charon.child_bytes()


@dataclass
class SitePeer:
    """The gateway at the far end of the server's site-to-site connection ``site-b``
    (SITE_B_PEER), in its own namespace: it brings the link up and down."""

    netns: str
    charon: Charon
    conn: str = "site-b"
    connected: bool = field(default=False)

    def connect(self, timeout: float = 15.0) -> None:
        self.charon.initiate(self.conn, self.conn, timeout=timeout)
        self.connected = True

    def disconnect(self) -> None:
        self.charon.terminate(self.conn)
        self.connected = False


class Lab(NamespaceLab):
    """A server charon on 10.99.0.1 and clients on 10.99.0.10+i, each in its own netns.

    ``clients`` names the server connection each client initiates (``nycmesh`` or
    ``ikev2-psk``). ``server_kernel="kernel-netlink"`` gives the real "IKE up, CHILD_SA
    failed" state on kernels without ESP. Use as a context manager, or call
    :meth:`start` and :meth:`close` (close always cleans up, also after a failed start).
    """

    def __init__(
        self,
        clients: Iterable[ConnName] = (),
        *,
        server_kernel: Kernel = "kernel-libipsec",
        with_cert: bool = False,
        connect: bool = True,
        keep_workdir: bool = False,
    ) -> None:
        super().__init__(server_kernel=server_kernel, keep_workdir=keep_workdir)
        self.server_kernel: Kernel = server_kernel
        self.with_cert = with_cert
        self._initial_clients = list(clients)
        self._connect = connect
        self.clients: list[Client] = []
        self.site_peer: SitePeer | None = None

    @property
    def server_socket(self) -> Path:
        return self.server.socket_path

    # -- lifecycle ---------------------------------------------------------------------------

    def charons(self) -> list[Charon]:
        peer = [self.site_peer.charon] if self.site_peer is not None else []
        return [c.charon for c in self.clients] + peer + [self.server]

    def _build(self) -> None:
        """Build the network, start and configure the server, add and connect clients."""
        t0 = time.monotonic()
        self._server_bridge()
        netns.add_loopback_address(self.server_ns, TUNNEL_TARGET)
        self.server.start()
        self.load_server()
        for conn in self._initial_clients:
            self.add_client(conn)
        self.timings["start"] = time.monotonic() - t0
        if self._connect:
            t1 = time.monotonic()
            self.connect_all(check=self.server_kernel == "kernel-libipsec")
            self.timings["connect"] = time.monotonic() - t1

    # -- parts -------------------------------------------------------------------------------

    def load_server(self) -> None:
        """(Re)load the server's connections, pools and secrets (plus a certificate)."""
        files: dict[str, bytes] = {}
        if self.with_cert:
            files["x509/lab-server.pem"] = certs.self_signed(self.workdir / "cert", "lab-server")
        self.server.load(server_swanctl_conf(), files)

    def add_client(self, conn: ConnName) -> Client:
        """A new client namespace on the bridge with a charon loaded for ``conn``."""
        index = len(self.clients)
        shape = ClientShape(conn, index)
        name = f"{self.prefix}c{index}"
        self._namespace(name)
        netns.add_veth(self.server_ns, f"c{index}", name, "eth0", bridge_a=BRIDGE)
        netns.add_address(name, "eth0", f"{shape.address}/{SUBNET_PREFIX}")
        charon = Charon(
            f"c{index}", name, self.workdir / f"c{index}", kernel="kernel-libipsec", server=False
        )
        client = Client(shape, name, charon)
        self.clients.append(client)
        charon.start()
        charon.load(client_swanctl_conf(shape))
        return client

    def add_site_peer(self) -> SitePeer:
        """The peer of ``site-b`` on the bridge (address SITE_B_PEER), its charon loaded
        but not connected: ``lab.site_peer.connect()`` brings the link up."""
        assert self.site_peer is None, "the lab has one site-b peer"
        name = f"{self.prefix}site"
        self._namespace(name)
        netns.add_veth(self.server_ns, "site", name, "eth0", bridge_a=BRIDGE)
        netns.add_address(name, "eth0", f"{SITE_B_PEER}/{SUBNET_PREFIX}")
        netns.add_loopback_address(name, SITE_B_SUBNET_HOST)  # the site's inside
        charon = Charon("site", name, self.workdir / "site", kernel="kernel-libipsec", server=False)
        self.site_peer = SitePeer(name, charon)
        charon.start()
        charon.load(site_peer_swanctl_conf())
        return self.site_peer

    def connect_all(self, *, check: bool = True) -> list[bool]:
        """Connect every client that is not connected, in parallel (one thread each)."""
        todo = [c for c in self.clients if not c.connected]
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(todo)))) as pool:
            return list(pool.map(lambda c: c.connect(check=check), todo))

    def logs(self) -> dict[str, str]:
        """Each charon's log text, by name (for failing tests and the demo)."""
        return {c.name: c.log_text() for c in [self.server, *self.charons()[:-1]]}
