"""The demo's Alertmanager receiver (`WebhookRecorder`) fed what Alertmanager never sends:
JSON that is no object, alerts that are no objects, labels that are no mapping, bytes
that are no JSON. Each POST is answered 200 and recorded, and the line the demo prints
for it is made without an exception (before: a traceback in the server thread per such
request, and the demo's print callback raising)."""

from __future__ import annotations

import urllib.request

import pytest

from exporter.demo.lab.alertmanager import Notification, WebhookRecorder

HOSTILE = [
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"42",
    b"\xff\xfe not json",
    b'{"alerts": "not a list", "commonLabels": []}',
    b'{"alerts": [1, null, "x", {"labels": "no mapping", "annotations": 7}]}',
    b'{"status": {"nested": true}, "alerts": [{"labels": {"alertname": ["list"]}}]}',
]


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_a_stray_post_is_recorded_and_printable(body: bytes) -> None:
    printed: list[str] = []

    def on_notification(notification: Notification) -> None:
        printed.append(notification.summary_line())

    with WebhookRecorder(on_notification) as recorder:
        request = urllib.request.Request(f"{recorder.url}/team-chat", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        (got,) = recorder.received()
    assert got.receiver == "team-chat"
    assert isinstance(got.body, dict)
    assert len(printed) == 1 and "to team-chat" in printed[0]
