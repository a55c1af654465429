"""The fake VICI server (tests/fakes/vici_server.py) gives the exporter's client exactly what
the recorded charon said, through the exporter's own codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from vici.protocol import Packet

from exporter.vici import ViciClient, ViciCommandError, ViciConnection
from tests.fakes.vici_server import FakeViciServer, Recording, recorded_events
from tests.recordings import VICI_FIXTURES, load_answers


@pytest.mark.parametrize("scenario", ["remote-access", "ike-up-child-failed"])
async def test_answers_are_the_recordings(tmp_path: Path, scenario: str) -> None:
    recorded = load_answers(VICI_FIXTURES / scenario)
    async with FakeViciServer(tmp_path / "charon.vici", Recording.scenario(scenario)) as charon:
        client = ViciClient(charon.address, timeout=2.0)
        try:
            assert await client.request("version") == recorded.version
            assert await client.request("stats") == recorded.stats
            assert await client.request("get-pools", {"leases": "yes"}) == recorded.get_pools
            assert await client.request("get-counters") == recorded.get_counters
            sas = await client.streamed_request("list-sas", "list-sa", {"noblock": "yes"})
            assert sas == recorded.list_sas
            assert await client.streamed_request("list-conns", "list-conn") == recorded.list_conns
            certs = await client.streamed_request("list-certs", "list-cert", {"type": "X509"})
            assert certs == recorded.list_certs
            with pytest.raises(ViciCommandError, match="does not know"):
                await client.request("reload-settings")
        finally:
            await client.close()
    assert [(a.kind, a.name) for a in charon.asked[:2]] == [
        (Packet.CMD_REQUEST, "version"),
        (Packet.CMD_REQUEST, "stats"),
    ]
    assert charon.last("get-pools") is not None
    assert charon.last("get-pools").arguments == {"leases": "yes"}  # type: ignore[union-attr]
    assert charon.count("list-sa", Packet.EVENT_REGISTER) == 1
    assert charon.count("list-sa", Packet.EVENT_UNREGISTER) == 1
    assert charon.connections_opened == 1


async def test_events_go_to_the_connections_registered_for_them(tmp_path: Path) -> None:
    _, events = recorded_events("up")
    async with FakeViciServer(tmp_path / "charon.vici") as charon:
        listener = await ViciConnection.open(charon.address, timeout=2.0)
        bystander = await ViciConnection.open(charon.address, timeout=2.0)
        try:
            for event in ("ike-updown", "child-updown"):
                await listener.register(event)
            assert charon.send_events(events) == len(events)
            received = [await listener.receive() for _ in events]
            assert [(f.kind, f.name) for f in received] == [(Packet.EVENT, n) for n, _ in events]
            assert [f.message for f in received] == [m for _, m in events]
            # The other connection registered for nothing: it gets its answers only.
            assert (await bystander.request("version"))["daemon"] == "charon"
        finally:
            await listener.close()
            await bystander.close()
