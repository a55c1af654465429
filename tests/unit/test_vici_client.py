"""Reconnect and backoff of the VICI client, with a clock the test controls."""

import asyncio
from pathlib import Path

import pytest
from vici.protocol import Packet

from exporter.config import ViciAddress
from exporter.vici import Backoff, ViciClient, ViciConnectionError
from exporter.vici.codec import frame

VERSION = Path(__file__).parent.parent / "fixtures" / "vici-packets" / "version-response.bin"


def test_backoff_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(initial=0.25, maximum=1.0)
    assert [backoff.failed() for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    backoff.reset()
    assert backoff.failed() == 0.25


async def answer_version(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A socket that answers every request with charon's recorded `version` reply."""
    try:
        while True:
            length = int.from_bytes(await reader.readexactly(4), "big")
            request = await reader.readexactly(length)
            assert request[0] == Packet.CMD_REQUEST
            writer.write(frame(VERSION.read_bytes()))
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


async def test_missing_socket_then_backoff_then_recovery(tmp_path: Path) -> None:
    now = [100.0]
    path = tmp_path / "charon.vici"
    client = ViciClient(ViciAddress("unix", path=str(path)), timeout=1, clock=lambda: now[0])
    with pytest.raises(ViciConnectionError, match="No such file"):
        await client.request("version")

    server = await asyncio.start_unix_server(answer_version, path=str(path))
    try:
        # Within the backoff delay the client does not even try.
        with pytest.raises(ViciConnectionError):
            await client.request("version")
        now[0] += 1
        assert (await client.request("version"))["daemon"] == "charon"
        assert client.connected
        assert client.reconnects == 0
    finally:
        server.close()
        await client.close()


async def test_timeout_drops_the_connection(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    path = tmp_path / "silent.vici"
    server = await asyncio.start_unix_server(silent, path=str(path))
    client = ViciClient(ViciAddress("unix", path=str(path)), timeout=0.2)
    try:
        with pytest.raises(ViciConnectionError, match="did not answer"):
            await client.request("version")
        assert not client.connected
    finally:
        server.close()
        await client.close()
