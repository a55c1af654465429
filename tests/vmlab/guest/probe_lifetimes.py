#!/usr/bin/env python3
"""tests/probes/run_probe.py with one change to the login prober: its IKEv1 proposals
carry lifetimes (Windows' values: IKE SA 8 h, IPsec SA 1 h) instead of none.

Until commit 34c7249 the prober loaded its connection into charon with
``rekey_time = 0`` for the IKE SA and the CHILD SA (exporter/probes/charon_session.py),
so charon proposed no lifetime in IKEv1 Main Mode, and Libreswan (4.10 and 5.2 both)
deletes such an ISAKMP SA right after Main Mode ("IKE SA expired (--dontrekey)"): the
probe failed against every setup-ipsec-vpn server. The vmlab tests fall back to this
(and xfail) only when the production prober fails that way again.

    python3 probe_lifetimes.py MODULES.yml MODULE TARGET
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

sys.path.insert(0, "/mnt/src")

from exporter.probes import charon_session

_config = charon_session.connection_config


def with_lifetimes(name: str, opts: Any, address: str) -> dict[str, Any]:
    conf = _config(name, opts, address)
    conn = conf[name]
    conn["rekey_time"] = "8h"
    for child in conn["children"].values():
        child["rekey_time"] = "1h"
    return conf


charon_session.connection_config = with_lifetimes
sys.argv = ["run_probe.py", *sys.argv[1:]]
runpy.run_path("/mnt/src/tests/probes/run_probe.py", run_name="__main__")
