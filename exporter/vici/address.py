"""Where charon's VICI socket is: the address type every VICI user (the client, the event
stream, the login probe) connects to, parsed from a `unix://` or `tcp://` URI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit


class ViciAddressError(ValueError):
    """A URI that names no VICI socket; the message starts with the URI (the settings
    layer puts the flag or key in front)."""


@dataclass(frozen=True)
class ViciAddress:
    """Where charon's VICI socket is: a UNIX socket path or a TCP host and port."""

    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, uri: str) -> ViciAddress:
        parts = urlsplit(uri)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ViciAddressError(f"{uri!r}: a unix:// URI needs a path")
            return cls(scheme="unix", path=path)
        if parts.scheme == "tcp":
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None or not 0 < port < 65536:
                raise ViciAddressError(f"{uri!r}: a tcp:// URI needs a host and a port 1-65535")
            return cls(scheme="tcp", host=parts.hostname, port=port)
        raise ViciAddressError(f"{uri!r}: expected unix:///path/to/charon.vici or tcp://host:port")

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"
