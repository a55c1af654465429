"""The systemd unit in contrib/systemd: parsed and held to its hardening, verified with
`systemd-analyze verify` and scored with `systemd-analyze security --offline=true` (both
work without systemd as PID 1, which this machine lacks: the unit is never started here).

What can be tried without systemd is tried for real: the privileges the unit grants
(a non-root user, CAP_NET_ADMIN as an ambient capability, no new privileges) are set up
with setpriv(1), and under them Python dumps XFRM states over netlink — and is refused
without the capability — and the exporter itself starts and serves.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "contrib" / "systemd" / "l2tp-ipsec-exporter.service"
SYSUSERS = REPO / "contrib" / "systemd" / "l2tp-ipsec-exporter.sysusers"

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections → [(key, value)] in order; a key may repeat (SystemCallFilter= does)."""
    unit: Unit = {}
    section = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            assert section not in unit, f"section [{section}] twice"
            unit[section] = []
            continue
        assert section is not None, f"{line!r} before any section"
        key, eq, value = line.partition("=")
        assert eq, f"not a key=value line: {line!r}"
        unit[section].append((key.strip(), value.strip()))
    return unit


UNIT_DATA = parse_unit(UNIT.read_text())


def values(key: str, section: str = "Service") -> list[str]:
    return [v for k, v in UNIT_DATA[section] if k == key]


def value(key: str, section: str = "Service") -> str:
    found = values(key, section)
    assert len(found) == 1, f"{key}= appears {len(found)} times in [{section}]"
    return found[0]


def test_sections() -> None:
    assert list(UNIT_DATA) == ["Unit", "Service", "Install"]
    assert value("WantedBy", "Install") == "multi-user.target"
    assert "network-online.target" in value("After", "Unit")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("User", "l2tp-ipsec-exporter"),
        ("Group", "l2tp-ipsec-exporter"),
        ("SupplementaryGroups", "strongswan-vici"),
        ("AmbientCapabilities", "CAP_NET_ADMIN"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
    ],
)
def test_hardening_key(key: str, expected: str) -> None:
    assert value(key) == expected


def test_the_fd_limit_holds_the_default_connection_cap_with_room() -> None:
    """LimitNOFILE: without it systemd gives 1,024 descriptors, which ~1,015 idle
    connections used up (issue 14). It must hold what the exporter needs at the default
    cap with the most probes at once, with room to raise the cap."""
    from exporter.config import WebLimits
    from exporter.fds import fds_needed
    from exporter.probes.config import DEFAULT_MAX_CONCURRENT

    limit = int(value("LimitNOFILE"))
    assert limit >= 4 * fds_needed(WebLimits(), DEFAULT_MAX_CONCURRENT), limit


def test_address_families_are_exactly_what_the_collectors_use() -> None:
    families = value("RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]


def test_system_call_filter() -> None:
    filters = values("SystemCallFilter")
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later filters may only deny"


def test_nothing_that_would_hide_the_kernel_state() -> None:
    service = dict(UNIT_DATA["Service"])
    # Each of these would blind a collector: a private network namespace has no VPN state,
    # a private user namespace makes CAP_NET_ADMIN useless on the host's netns, and
    # ProcSubset=pid hides /proc/net/xfrm_stat.
    assert service.get("PrivateNetwork", "no") == "no"
    assert service.get("PrivateUsers", "no") == "no"
    assert service.get("ProcSubset", "all") == "all"
    assert service.get("DynamicUser", "no") == "no"  # config files need a stable owner


def test_starts_the_installed_console_script() -> None:
    exec_start = value("ExecStart").split()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(exec_start[0]).name in scripts
    assert exec_start[0] == "/opt/l2tp-ipsec-exporter/bin/l2tp-ipsec-exporter"
    assert "/opt/l2tp-ipsec-exporter" in (REPO / "README.md").read_text()
    assert value("Type") in ("exec", "simple")


def test_sysusers_snippet_defines_the_user_and_the_vici_group() -> None:
    entries = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["u", value("User")] == entries[0][:2]
    groups = {e[1] for e in entries if e[0] == "g"}
    assert value("SupplementaryGroups") in groups


# ---- systemd-analyze ---------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists on this machine
    (verify checks it); everything else unchanged."""
    here = shutil.which("l2tp-ipsec-exporter") or str(Path(sys.executable))
    text = UNIT.read_text().replace("/opt/l2tp-ipsec-exporter/bin/l2tp-ipsec-exporter", here)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", str(_testable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "l2tp-ipsec-exporter.service" not in result.stderr, result.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_security_score(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", "--no-pager",
         str(_testable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    if result.returncode and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze too old for --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 0 is a perfect sandbox, 10 none; host network, netlink and CAP_NET_ADMIN are what
    # the collectors need and cost about 1.5 on their own.
    assert float(match.group(1)) <= 2.0, result.stdout


# ---- the privileges, for real (setpriv instead of systemd) --------------------------------

SETPRIV = shutil.which("setpriv")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv(1)"
)

NETLINK_XFRM = 6
XFRM_MSG_GETSA = 0x12
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR = 2

#: Runs in the child: one XFRM_MSG_GETSA dump; prints "ok" or the errno name.
XFRM_DUMP = f"""
import errno, socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, {NETLINK_XFRM})
s.bind((0, 0))
body = bytes(232)  # struct xfrm_usersa_info, all zero: dump everything
s.send(struct.pack("=IHHII", 16 + len(body), {XFRM_MSG_GETSA}, {NLM_F_REQUEST | NLM_F_DUMP},
                   1, 0) + body)
data = s.recv(65536)
length, kind = struct.unpack_from("=IH", data)
if kind == {NLMSG_ERROR}:
    (code,) = struct.unpack_from("=i", data, 16)
    print(errno.errorcode.get(-code, str(code)) if code else "ok")
else:
    print("ok")
"""


def _as_unit_user(*command: str, ambient: bool = True) -> list[str]:
    caps = ["--inh-caps=+net_admin", "--ambient-caps=+net_admin"] if ambient else []
    return [
        str(SETPRIV), "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        *caps, "--bounding-set=-all,+net_admin", "--no-new-privs", *command,
    ]  # fmt: skip


def _xfrm_netlink_available() -> bool:
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM).close()
    except OSError:
        return False
    return True


@needs_root
@pytest.mark.skipif(not _xfrm_netlink_available(), reason="no XFRM netlink in this kernel")
def test_ambient_net_admin_is_what_an_xfrm_dump_needs() -> None:
    with_cap = subprocess.run(
        _as_unit_user(sys.executable, "-c", XFRM_DUMP), capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert with_cap.stdout.strip() == "ok", with_cap.stdout + with_cap.stderr
    without = subprocess.run(
        _as_unit_user(sys.executable, "-c", XFRM_DUMP, ambient=False),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert without.stdout.strip() == "EPERM", without.stdout + without.stderr


@needs_root
def test_exporter_serves_as_the_unit_user(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = _as_unit_user(
        sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}",
        f"--vici.socket=unix://{tmp_path}/absent.vici",
    )  # fmt: skip
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd="/", env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert "strongswan_up 0.0" in body
    finally:
        proc.terminate()
        proc.wait(15)
    status = subprocess.run(["ps", "-o", "user=", "-p", str(proc.pid)], capture_output=True)
    assert status.returncode != 0  # gone after SIGTERM


def test_unit_and_dockerfile_agree_on_the_socket_path() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "/var/run/charon.vici" in dockerfile
    # Not in the unit's ExecStart: --vici.socket's default is that path already.
    assert "charon.vici" not in value("ExecStart")


#: Runs in the child as the unit's user without CAP_NET_ADMIN: two scrapes of the XFRM
#: collector, then what they said.
XFRM_WITHOUT_CAP = """
import asyncio, json, logging, sys
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        text = record.getMessage() + " " + str(getattr(record, "err", ""))
        lines.append((record.levelname, text, bool(record.exc_info)))
logging.getLogger().addHandler(Keep())
from exporter.collectors.limits import SeriesLimiter
from exporter.collectors.xfrm import XfrmCollector
from exporter.kernel.options import KernelOptions
from exporter.kernel.source import KernelSource
from exporter.scrape import Scraper
async def main():
    scraper = Scraper([XfrmCollector(KernelSource(KernelOptions()), SeriesLimiter(10))])
    success = []
    for _ in range(3):
        for family in await scraper.scrape():
            if family.name == "l2tp_ipsec_exporter_collector_success":
                success += [s.value for s in family.samples]
        await asyncio.sleep(1.1)  # past the shared dump's reuse window
    print(json.dumps({"success": success, "lines": lines}))
asyncio.run(main())
"""


@needs_root
@pytest.mark.skipif(not _xfrm_netlink_available(), reason="no XFRM netlink in this kernel")
def test_without_net_admin_the_xfrm_collector_says_so_once() -> None:
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        _as_unit_user(sys.executable, "-c", XFRM_WITHOUT_CAP, ambient=False),
        capture_output=True, text=True, timeout=60, cwd="/", env=env,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["success"] == [0.0, 0.0, 0.0]
    problems = [line for line in report["lines"] if line[0] in ("WARNING", "ERROR")]
    assert len(problems) == 1, problems
    assert not problems[0][2], "a traceback for a missing capability"
    assert "CAP_NET_ADMIN" in problems[0][1], problems
