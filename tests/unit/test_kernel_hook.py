"""The shipped pppd hook (contrib/ppp/) run as pppd runs it, and the exporter's reader.

Also /proc/net/pppol2tp as the guest's kernel (6.1) wrote it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exporter.kernel.hook import read_state_dir
from exporter.kernel.l2tp import parse_pppol2tp

CONTRIB = Path(__file__).resolve().parent.parent.parent / "contrib" / "ppp"
UP = CONTRIB / "ip-up.d" / "l2tp-ipsec-exporter"
DOWN = CONTRIB / "ip-down.d" / "l2tp-ipsec-exporter"

#: `cat /proc/net/pppol2tp` in the vmlab guest with three clients connected (captured
#: from the guest, verbatim; tests/vmlab/test_kernel_guest.py parses the live file too).
PPPOL2TP_GUEST = """\
 PPPoL2TP driver info, V2.0
TUNNEL name, user-data-ok session-count
 debug tx-pkts/bytes/errs rx-pkts/bytes/errs
  SESSION name, addr/port src-tid/sid dest-tid/sid state user-data-ok
   mtu/mru/rcvseq/sendseq/lns debug reorderto
   nr/ns tx-pkts/bytes/errs rx-pkts/bytes/errs

TUNNEL 'tunl 35755', Y 3
 00000000 19/623/0 17/527/0
  SESSION 'sess 35755/0' C0A84D01/1701 8BAB/0000 -> B0FC/0000 1 Y
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0
   interface (null)
  SESSION 'sess 35755/51531' C0A84D01/1701 8BAB/C94B -> B0FC/9B48 3 Y
   0/0/-/-/LNS 00000000 0
   0/0 19/623/0 17/527/0
   interface ppp0

TUNNEL 'tunl 38974', Y 3
 00000000 13/435/0 11/339/0
  SESSION 'sess 38974/0' C0A84D01/1701 983E/0000 -> E49F/0000 1 Y
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0
   interface (null)
  SESSION 'sess 38974/57787' C0A84D01/1701 983E/E1BB -> E49F/D250 3 Y
   0/0/-/-/LNS 00000000 0
   0/0 13/435/0 11/339/0
   interface ppp2

TUNNEL 'tunl 43359', Y 3
 00000000 17/587/0 15/491/0
  SESSION 'sess 43359/0' C0A84D01/1701 A95F/0000 -> 5742/0000 1 Y
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0
   interface (null)
  SESSION 'sess 43359/724' C0A84D01/1701 A95F/02D4 -> 5742/9052 3 Y
   0/0/-/-/LNS 00000000 0
   0/0 17/587/0 15/491/0
   interface ppp1
"""


def test_pppol2tp_names_each_calls_interface() -> None:
    assert parse_pppol2tp(PPPOL2TP_GUEST) == {
        (35755, 51531): "ppp0",
        (38974, 57787): "ppp2",
        (43359, 724): "ppp1",
    }


def _run(script: Path, state: Path, *args: str, **env: str) -> None:
    full = {"PATH": os.environ["PATH"], "L2TP_IPSEC_EXPORTER_STATE_DIR": str(state), **env}
    subprocess.run(["/bin/sh", str(script), *args], env=full, check=True, timeout=10)


def test_hook_writes_a_record_the_reader_reads(tmp_path: Path) -> None:
    """ip-up with pppd's arguments and environment (on `lo`, a real interface here)."""
    state = tmp_path / "ppp"
    _run(UP, state, "lo", "", "0", "192.168.42.1", "192.168.42.10", "",
         PEERNAME="alice\nx=1", PPPD_PID=str(os.getpid()))  # fmt: skip
    records = read_state_dir(state)
    rec = records["lo"]
    assert rec.peer_name == "alicex=1"  # one line: control characters dropped
    assert (rec.local_address, rec.peer_address) == ("192.168.42.1", "192.168.42.10")
    assert rec.ifindex == int(Path("/sys/class/net/lo/ifindex").read_text())
    assert rec.pppd_pid == os.getpid() and rec.up_since is not None
    assert list(state.iterdir()) == [state / "lo"]  # no temporary file left


def test_hook_reads_l2tp_ids_from_pppds_command_line(tmp_path: Path) -> None:
    """xl2tpd hands pppd `pppol2tp_tunnel_id N pppol2tp_session_id M`: the hook keeps them."""
    ids = ["pppol2tp_tunnel_id", "35755", "pppol2tp_session_id", "51531"]
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", *ids])
    try:
        _run(UP, tmp_path, "lo", PEERNAME="bob", PPPD_PID=str(fake.pid))
    finally:
        fake.kill()
        fake.wait()
    rec = read_state_dir(tmp_path)["lo"]
    assert (rec.l2tp_tunnel_id, rec.l2tp_session_id) == (35755, 51531)


def test_ip_down_removes_only_its_own_record(tmp_path: Path) -> None:
    _run(UP, tmp_path, "lo", PEERNAME="bob", PPPD_PID="111")
    _run(DOWN, tmp_path, "lo", PPPD_PID="222")  # a late ip-down of an older pppd
    assert "lo" in read_state_dir(tmp_path)
    _run(DOWN, tmp_path, "lo", PPPD_PID="111")
    assert read_state_dir(tmp_path) == {}


def test_missing_state_dir_reads_empty(tmp_path: Path) -> None:
    assert read_state_dir(tmp_path / "nope") == {}
