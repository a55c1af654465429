"""The login prober's use of the local charon: a temporary connection and its secrets.

Everything is loaded under one unique name and removed again by `cleanup`, which never
raises: a probe must not leave a connection, an SA or a secret behind in charon. Secrets
go into `load-shared` messages only; nothing here logs a message body.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from vici.protocol import Packet

from exporter.probes.config import LoginOptions
from exporter.vici import ViciConnection, ViciError
from exporter.vici.address import ViciAddress
from exporter.vici.codec import ViciMessage

#: Seconds for one VICI call that is not `initiate`.
CALL_TIMEOUT = 5.0


@dataclass
class UpDown:
    """When charon reported our IKE SA and CHILD SA up (monotonic seconds)."""

    ike_up: float | None = None
    child_up: float | None = None
    ike_down: bool = False
    messages: list[str] = field(default_factory=list)


def connection_config(name: str, opts: LoginOptions, address: str) -> dict[str, Any]:
    """The load-conn body: an initiator for `address` with one L2TP child."""
    port = opts.local_port
    local_ts = f"dynamic[17/{port}]" if port else "dynamic[17]"
    local: dict[str, str] = {"auth": "psk"}
    if opts.local_id:
        local["id"] = opts.local_id
    conn: dict[str, Any] = {
        "version": str(opts.ike_version),
        "remote_addrs": [address],
        "proposals": list(opts.ike_proposals),
        "encap": "yes" if opts.encap else "no",
        "keyingtries": "1",
        "send_certreq": "no",
        "mobike": "no",
        "dpd_delay": "0",
        # Windows' lifetimes (IKE SA 8 h, IPsec SA 1 h): in IKEv1 charon proposes the
        # lifetime from rekey_time, and with none (0) Libreswan 4.10 and 5.2 delete the
        # ISAKMP SA right after Main Mode ("IKE SA expired (--dontrekey)"), failing every
        # probe of a setup-ipsec-vpn server. A probe lives seconds: nothing ever rekeys.
        "rekey_time": "8h",
        "local": local,
        "remote": {"auth": "psk", "id": opts.remote_id or "%any"},
        "children": {
            name: {
                "mode": opts.mode,
                "local_ts": [local_ts],
                "remote_ts": list(opts.remote_ts),
                "esp_proposals": list(opts.esp_proposals),
                "start_action": "none",
                "close_action": "none",
                "dpd_action": "clear",
                "rekey_time": "1h",
            }
        },
    }
    if opts.vips:
        conn["vips"] = ["0.0.0.0"]
    if opts.xauth_password is not None:
        conn["local-xauth"] = {"auth": "xauth", "xauth_id": opts.xauth_username}
    return {name: conn}


class CharonSession:
    """Two VICI connections: one for commands, one for the up/down events of our SAs."""

    def __init__(self, socket: str, name: str) -> None:
        self.address = ViciAddress.parse(socket)
        self.name = name
        self.updown = UpDown()
        self._cmd: ViciConnection | None = None
        self._events: ViciConnection | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._loaded_conn = False
        self._loaded_secrets: list[str] = []

    async def open(self) -> None:
        self._cmd = await ViciConnection.open(self.address, CALL_TIMEOUT)
        self._events = await ViciConnection.open(self.address, CALL_TIMEOUT)
        async with asyncio.timeout(CALL_TIMEOUT):
            await self._events.register("ike-updown")
            await self._events.register("child-updown")
        self._watcher = asyncio.create_task(self._watch(self._events))

    async def _watch(self, conn: ViciConnection) -> None:
        while True:
            frame = await conn.receive()
            if frame.kind != Packet.EVENT or self.name not in frame.message:
                continue
            up = frame.message.get("up") == "yes"
            now = time.monotonic()
            if frame.name == "ike-updown":
                if up and self.updown.ike_up is None:
                    self.updown.ike_up = now
                elif not up:
                    self.updown.ike_down = True
            elif frame.name == "child-updown" and up and self.updown.child_up is None:
                self.updown.child_up = now

    async def _call(self, command: str, message: dict[str, Any]) -> ViciMessage:
        if self._cmd is None or self._cmd.closed:
            # A timed-out call leaves an answer in flight: a fresh connection is cleaner.
            self._cmd = await ViciConnection.open(self.address, CALL_TIMEOUT)
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await self._cmd.request(command, message)
        except BaseException:
            # Timed out or cancelled (the probe's deadline): charon may still answer this
            # request, and that answer must not be read as the next one's.
            self._cmd.abort()
            raise

    async def load(self, opts: LoginOptions, address: str) -> None:
        assert opts.psk is not None
        owners = [opts.remote_id or address]
        await self._load_secret("ike", opts.psk.reveal(), owners)
        if opts.xauth_password is not None:
            await self._load_secret("xauth", opts.xauth_password.reveal(), [opts.xauth_username])
        await self._call("load-conn", connection_config(self.name, opts, address))
        self._loaded_conn = True

    async def _load_secret(self, kind: str, data: str, owners: list[str]) -> None:
        ident = f"{self.name}-{kind}"
        self._loaded_secrets.append(ident)  # before the call: a timeout may still load it
        await self._call("load-shared", {"id": ident, "type": kind, "data": data, "owners": owners})

    async def initiate(self, timeout: float) -> None:
        """Bring our IKE SA and CHILD SA up; ViciError with charon's reason on failure."""
        if self._cmd is None or self._cmd.closed:
            self._cmd = await ViciConnection.open(self.address, CALL_TIMEOUT)
        cmd = self._cmd
        message = {
            "child": self.name,
            "ike": self.name,
            "timeout": str(max(int(timeout * 1000), 1)),
            "init-limits": "no",
            "loglevel": "1",
        }
        try:
            async with asyncio.timeout(timeout + 1):
                logs = await cmd.streamed_request("initiate", "control-log", message)
        except BaseException:
            cmd.abort()  # an answer may still come: never read it as another's
            raise
        self.updown.messages = [str(entry.get("msg", "")) for entry in logs][-20:]

    async def ike_sa(self) -> dict[str, Any]:
        """Our IKE SA as list-sas shows it (empty when there is none)."""
        if self._cmd is None or self._cmd.closed:
            self._cmd = await ViciConnection.open(self.address, CALL_TIMEOUT)
        cmd = self._cmd
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                events = await cmd.streamed_request("list-sas", "list-sa", {"ike": self.name})
        except BaseException:
            cmd.abort()
            raise
        for event in events:
            if self.name in event:
                sa: dict[str, Any] = event[self.name]
                return sa
        return {}

    async def cleanup(self) -> bool:
        """Terminate our SAs, unload the connection and the secrets; True if all went."""
        clean = True
        steps: list[tuple[str, dict[str, Any]]] = []
        if self._loaded_conn:
            steps.append(("terminate", {"ike": self.name, "force": "yes", "timeout": "2000"}))
            steps.append(("unload-conn", {"name": self.name}))
        steps += [("unload-shared", {"id": ident}) for ident in self._loaded_secrets]
        for command, message in steps:
            try:
                await self._call(command, message)
            except ViciError as err:
                # Nothing to terminate is fine: the SA never came up or is already gone.
                if command != "terminate" or "no matching" not in str(err):
                    clean = False
            except (TimeoutError, OSError):
                clean = False
        self._loaded_conn = False
        self._loaded_secrets = []
        await self.close()
        return clean

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        for conn in (self._cmd, self._events):
            if conn is not None:
                await conn.close()
