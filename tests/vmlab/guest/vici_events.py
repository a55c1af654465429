#!/usr/bin/env python3
"""Record the server charon's VICI events in the guest, for test fixtures.

Runs inside the vmlab guest (record.py starts it in the background over the control
channel): prints one JSON line with the server's list-sas answer (the baseline), then
registers for ike-updown, child-updown, ike-rekey and child-rekey and writes each event
as one JSON line ({"event": name, "message": ...}, values as strings, as
tests/fixtures/record_events.py writes them) until it is killed.

    python3 vici_events.py /var/run/charon.vici > events.jsonl
"""

from __future__ import annotations

import base64
import json
import socket
import sys
from typing import Any

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")


def decode(value: Any) -> Any:
    """VICI values as strings (bytes that are not UTF-8 as {"$base64": ...}), as
    nldump.py decodes them."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [decode(v) for v in value]
    return value


def main(path: str) -> None:
    from vici.protocol import Message, Packet, Transport

    def out(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        t = Transport(s)
        t.send(Packet.register_event("list-sa"))
        Packet.parse(t.receive())
        t.send(Packet.request("list-sas"))
        sas = []
        while True:
            p = Packet.parse(t.receive())
            if p.response_type == Packet.EVENT:
                sas.append(decode(Message.deserialize(p.payload)))
            elif p.response_type == Packet.CMD_RESPONSE:
                break
        t.send(Packet.unregister_event("list-sa"))
        Packet.parse(t.receive())
        out({"list-sas-before": sas})
        for name in EVENTS:
            t.send(Packet.register_event(name))
            Packet.parse(t.receive())
        out({"registered": list(EVENTS)})
        while True:
            p = Packet.parse(t.receive())
            if p.response_type == Packet.EVENT:
                out(
                    {
                        "event": p.event_type.decode(),
                        "message": decode(Message.deserialize(p.payload)),
                    }
                )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/var/run/charon.vici")
