"""What every lab shares: its namespaces, work folder and charons, and cleaning them up.

A lab gets an id no other lab uses and a name prefix, claims a work folder (so
`netns.remove_leftovers` removes only what this process's closed labs left), records
each namespace as soon as it exists (a half-made one must go too), and `close()` kills
every charon and deletes every namespace whatever went wrong, also after a failed
`start()`; what it could not delete keeps the claim for the next start.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from exporter.demo.lab import netns
from exporter.demo.lab.charon import Charon
from exporter.demo.lab.configs import SERVER_ADDR, SUBNET_PREFIX, Kernel

BRIDGE = "br0"


class NamespaceLab:
    def __init__(self, *, server_kernel: Kernel, keep_workdir: bool) -> None:
        self.id = netns.new_lab_id()
        self.prefix = f"{netns.LAB_PREFIX}{self.id}-"
        self.keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
        netns.claim(self.workdir)
        self.server_ns = f"{self.prefix}srv"
        self.server = Charon(
            "server", self.server_ns, self.workdir / "server", kernel=server_kernel, server=True
        )
        self._namespaces: list[str] = []
        self.timings: dict[str, float] = {}

    @property
    def server_uri(self) -> str:
        return self.server.uri

    def charons(self) -> list[Charon]:
        """Every charon of the lab, the server last."""
        return [self.server]

    def _build(self) -> None:
        """Make the namespaces and start the charons (the subclass's topology)."""
        raise NotImplementedError

    def start(self) -> Self:
        try:
            netns.remove_leftovers()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill every charon, delete every namespace and (unless kept) the work folder."""
        for charon in self.charons():
            # Teardown goes on whatever one step does; deleting the netns kills leftovers.
            with contextlib.suppress(Exception):
                charon.kill()
        for name in reversed(self._namespaces):
            with contextlib.suppress(Exception):
                netns.delete_namespace(name)
        netns.release(self.workdir)
        left = set(self._namespaces) & set(netns.list_namespaces())
        self._namespaces.clear()
        if left:
            # The claim stays: this process's next lab start removes them.
            return
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            (self.workdir / netns.OWNER_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _namespace(self, name: str) -> None:
        # Recorded once `ip netns add` made it, before the rest: a half-made one must go
        # too. A name that was taken is not ours, and close() must not delete it.
        netns.ip("netns", "add", name)
        self._namespaces.append(name)
        netns.ip("link", "set", "lo", "up", netns=name)

    def _server_bridge(self) -> None:
        """The server's namespace with the bridge every other namespace hangs on."""
        self._namespace(self.server_ns)
        netns.add_bridge(self.server_ns, BRIDGE)
        netns.add_address(self.server_ns, BRIDGE, f"{SERVER_ADDR}/{SUBNET_PREFIX}")
