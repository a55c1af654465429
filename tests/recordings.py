"""Loading recorded real-charon VICI answers (tests/fixtures/vici/) as the codec yields them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from exporter.strongswan.fetch import ViciAnswers

VICI_FIXTURES = Path(__file__).parent / "fixtures" / "vici"
#: Recordings carry ages ("established 5 s ago"); rendering them at a fixed time keeps the
#: golden output stable.
RECORDED_NOW = 1_800_000_000.0


def _as_codec_yields(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$base64"}:
            raw = base64.b64decode(value["$base64"])
            return raw.decode("utf-8", errors="surrogateescape")
        return {k: _as_codec_yields(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_codec_yields(v) for v in value]
    return value


def _load(scenario: Path, command: str) -> Any:
    path = scenario / f"{command}.json"
    return _as_codec_yields(json.loads(path.read_text())) if path.exists() else None


def scenarios() -> list[Path]:
    return sorted(p for p in VICI_FIXTURES.iterdir() if (p / "version.json").exists())


def load_answers(scenario: Path) -> ViciAnswers:
    return ViciAnswers(
        version=_load(scenario, "version"),
        stats=_load(scenario, "stats"),
        list_sas=_load(scenario, "list-sas"),
        list_conns=_load(scenario, "list-conns"),
        get_pools=_load(scenario, "get-pools"),
        list_certs=_load(scenario, "list-certs") or [],
        get_counters=_load(scenario, "get-counters-global"),
    )
