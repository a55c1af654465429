"""The Debian package, the operator's way: built by scripts/build-deb, lintian-clean,
installed with apt on a clean Debian 12 root (a debootstrap'd minbase chroot, so apt
resolves its Depends), and the exporter started from it.

The chroot's base (debootstrap --variant=minbase bookworm) is cached as a tarball outside
the checkout, keyed on its inputs (suite, mirror, this module's BASE_* constants), like
tests/vmlab/build.py caches the guest image: ``$DEB_TEST_CACHE`` or
``/var/cache/l2tp-ipsec-exporter/deb-test``. The .debs apt downloads into the chroot are
kept there too. The package build runs beside the chroot's preparation.

Nothing is mounted in the chroot except /proc, for the exporter's run; every process it
starts is ended and /proc unmounted also when a test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
PKG = "l2tp-ipsec-exporter"

BASE_SUITE = "bookworm"
BASE_VARIANT = "minbase"
#: Bump to rebuild every cached base.
BASE_FORMAT = 1
DEFAULT_CACHE = "/var/cache/l2tp-ipsec-exporter/deb-test"

pytestmark = [
    pytest.mark.deb,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, chroot, apt)"),
    pytest.mark.skipif(
        shutil.which("debootstrap") is None or shutil.which("dpkg-buildpackage") is None,
        reason="needs debootstrap and dpkg-dev (scripts/install-test-deps)",
    ),
]


def log(msg: str) -> None:
    print(f"test_deb: {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    timeout: float = 600,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run, return stdout+stderr; fail the test with the output on a non-zero exit."""
    result = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
        cwd=cwd, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result.stdout


# ---- the cached base root ------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("DEB_TEST_CACHE", DEFAULT_CACHE))


def mirror() -> str:
    from tests.vmlab.build import apt_mirror

    return apt_mirror()


def base_key() -> str:
    inputs = [BASE_SUITE, BASE_VARIANT, BASE_FORMAT, mirror()]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]


def base_tarball() -> Path:
    """The minbase root as a tarball: from the cache, or debootstrap'd into it (about a
    minute). Other keys' tarballs are removed."""
    cache = cache_root()
    tar = cache / f"base-{BASE_SUITE}-{base_key()}.tar"
    if tar.exists():
        return tar
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.exists():
            return tar
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
        try:
            root = work / "root"
            run(
                ["debootstrap", f"--variant={BASE_VARIANT}", BASE_SUITE, str(root), mirror()],
                timeout=900,
            )
            (root / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(work / "base.tar"), "."])
            (work / "base.tar").rename(tar)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for old in cache.glob("base-*.tar"):
            if old != tar:
                old.unlink()
        log(f"built {tar} in {time.monotonic() - t0:.0f} s")
    return tar


def archives_cache() -> Path:
    path = cache_root() / "apt-archives"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- mounts and processes ------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            found.append(point)
    return found


def unmount_all(root: Path) -> None:
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def processes_in(root: Path) -> list[int]:
    """Processes whose root directory is the chroot (the exporter, anything apt left)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "root") == str(root):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def end_processes(root: Path) -> None:
    for pid in processes_in(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.1)


# ---- the fixtures --------------------------------------------------------------------------


class Built(NamedTuple):
    deb: Path
    lintian_rc: int
    output: str


class Installed(NamedTuple):
    root: Path
    built: Built


def chroot(root: Path, *cmd: str, timeout: float = 600) -> str:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
    }
    return run(["chroot", str(root), *cmd], timeout=timeout, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the package (scripts/build-deb, in the background) while a fresh root is
    unpacked from the cached base and its apt lists fetched; then `apt-get install
    ./pkg.deb` in it."""
    out = tmp_path_factory.mktemp("deb-out")
    build_log = out / "build-deb.log"
    t0 = time.monotonic()
    with open(build_log, "w") as logf:
        build = subprocess.Popen(
            [str(REPO / "scripts" / "build-deb"), str(out / "debs")],
            stdout=logf, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="deb-test-root-", dir="/var/tmp"))
    try:
        tar = base_tarball()
        run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tar)])
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# no daemon starts in the test's chroot\nexit 101\n")
        policy.chmod(0o755)
        chroot(root, "apt-get", "-qq", "update")
        log(f"chroot ready after {time.monotonic() - t0:.0f} s")
        try:
            build.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            pytest.fail(f"scripts/build-deb took over 15 min:\n{build_log.read_text()[-6000:]}")
        output = build_log.read_text()
        debs = sorted((out / "debs").glob(f"{PKG}_*.deb"))
        if not debs:
            pytest.fail(f"scripts/build-deb built no package:\n{output[-6000:]}")
        built = Built(debs[0], build.returncode, output)
        log(f"built and lintian'd after {time.monotonic() - t0:.0f} s")

        archives = root / "var/cache/apt/archives"
        for deb in archives_cache().glob("*.deb"):
            shutil.copy(deb, archives)
        shutil.copy(built.deb, root / "tmp")
        chroot(
            root, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
            f"/tmp/{built.deb.name}",
        )  # fmt: skip
        for deb in archives.glob("*.deb"):
            if not (archives_cache() / deb.name).exists():
                shutil.copy(deb, archives_cache())
        log(f"installed after {time.monotonic() - t0:.0f} s")
        yield Installed(root, built)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
        end_processes(root)
        unmount_all(root)
        if mounts_under(root):
            log(f"left {root} in place: still mounted {mounts_under(root)}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def proc_mounted(installed: Installed) -> Iterator[Path]:
    root = installed.root
    (root / "proc").mkdir(exist_ok=True)
    run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        yield root
    finally:
        end_processes(root)
        unmount_all(root)


# ---- the tests -----------------------------------------------------------------------------


def test_lintian_reports_no_errors_or_warnings(installed: Installed) -> None:
    output = installed.built.output
    tags = [line for line in output.splitlines() if re.match(r"[EW]: ", line)]
    assert not tags, "\n".join(tags)
    assert installed.built.lintian_rc == 0, output[-4000:]
    assert "lintian exit 0" in output


def test_files_where_an_operator_looks(installed: Installed) -> None:
    root = installed.root
    expected = [
        f"usr/bin/{PKG}",
        f"usr/lib/sysusers.d/{PKG}.conf",
        f"etc/ppp/ip-up.d/{PKG}",
        f"etc/ppp/ip-down.d/{PKG}",
        f"etc/{PKG}/config.yml",
        f"etc/default/{PKG}",
        f"lib/systemd/system/{PKG}.service",
        f"usr/share/man/man1/{PKG}.1.gz",
    ]
    missing = [path for path in expected if not (root / path).exists()]
    assert not missing, f"not installed: {missing}"
    # What Prometheus, Alertmanager and Grafana are pointed at, as the repository has it.
    shipped = {
        "alerts": sorted(
            [p.name for p in (REPO / "alerts").glob("*.rules.yml")] + ["alertmanager.example.yml"]
        ),
        "dashboards": sorted(p.name for p in (REPO / "dashboards").glob("*.json")),
    }
    for folder, names in shipped.items():
        there = root / "usr/share" / PKG / folder
        assert sorted(p.name for p in there.iterdir()) == names, folder
        for name in names:
            assert (there / name).read_bytes() == (REPO / folder / name).read_bytes(), name
    wrapper = root / "usr/bin" / PKG
    assert os.access(wrapper, os.X_OK)
    assert f"/usr/lib/{PKG}/bin/python3.11" in wrapper.read_text()
    sysusers = (root / "usr/lib/sysusers.d" / f"{PKG}.conf").read_text()
    assert sysusers == (REPO / "contrib/systemd" / f"{PKG}.sysusers").read_text()
    for hook in ("ip-up.d", "ip-down.d"):
        path = root / "etc/ppp" / hook / PKG
        assert path.read_bytes() == (REPO / "contrib/ppp" / hook / PKG).read_bytes()
        assert os.access(path, os.X_OK), path
    config = root / "etc" / PKG / "config.yml"
    assert config.read_text() == (REPO / "examples/config.yml").read_text()
    default = (root / "etc/default" / PKG).read_text()
    assert f"--config.file=/etc/{PKG}/config.yml" in default
    conffiles = (root / "var/lib/dpkg/info" / f"{PKG}.conffiles").read_text().split()
    assert sorted(conffiles) == sorted(
        [
            f"/etc/default/{PKG}",
            f"/etc/{PKG}/config.yml",
            f"/etc/ppp/ip-down.d/{PKG}",
            f"/etc/ppp/ip-up.d/{PKG}",
        ]
    )
    unit = (root / "lib/systemd/system" / f"{PKG}.service").read_text()
    assert f"ExecStart=/usr/bin/{PKG} $ARGS" in unit
    assert "/opt/" not in unit
    # The unit is contrib/'s apart from paths and comments: every other line kept.
    settings = {ln for ln in unit.splitlines() if ln and not ln.startswith("#")}
    contrib = (REPO / "contrib/systemd" / f"{PKG}.service").read_text().splitlines()
    missing = [
        ln for ln in contrib if ln and not ln.startswith(("#", "ExecStart=")) and ln not in settings
    ]
    assert not missing, missing
    # postinst: systemd-sysusers made the user and groups; the configuration directory is
    # readable by the exporter's group only.
    passwd = (root / "etc/passwd").read_text()
    assert re.search(rf"^{PKG}:x:\d+:\d+:.*:/usr/sbin/nologin$", passwd, re.M), passwd
    group = (root / "etc/group").read_text()
    assert re.search(r"^strongswan-vici:", group, re.M), group
    st = (root / "etc" / PKG).stat()
    assert oct(st.st_mode & 0o777) == "0o750"
    gid = int(re.search(rf"^{PKG}:x:(\d+):", group, re.M).group(1))  # type: ignore[union-attr]
    assert st.st_gid == gid
    # No build path leaked into the virtualenv; the bytecode postinst compiled is there.
    venv = root / "usr/lib" / PKG
    assert "/tmp/" not in (venv / "pyvenv.cfg").read_text()
    assert list((venv / "lib/python3.11/site-packages/exporter").glob("__pycache__/*.pyc"))


def test_man_page_has_every_flag(installed: Installed) -> None:
    page = installed.root / "usr/share/man/man1" / f"{PKG}.1.gz"
    text = gzip.decompress(page.read_bytes()).decode().replace("\\-", "-")
    assert re.search(rf'^\.TH {re.escape(PKG.upper())} "?1"? ', text, re.M), text[:400]
    helptext = run([sys.executable, "-m", "exporter", "--help"], cwd=REPO)
    flags = set(re.findall(r"--[a-z][a-z0-9.-]*[a-z0-9]", helptext))
    assert len(flags) > 30, flags
    missing = sorted(f for f in flags if f not in text)
    assert not missing, missing
    assert f"/etc/{PKG}/config.yml" in text  # the FILES section
    if shutil.which("man"):
        rendered = run(["man", "-l", str(page)], env={**os.environ, "MANPAGER": "cat"})
        assert "--web.listen-address" in rendered.replace("\u2010", "-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exporter_runs_from_the_package(installed: Installed, proc_mounted: Path) -> None:
    """As the unit runs it: the sysusers user, /etc/default's ARGS (so the installed
    configuration file), through /usr/bin's wrapper; served, scraped from the host, ended
    by SIGTERM with exit 0."""
    root = proc_mounted
    default = (root / "etc/default" / PKG).read_text()
    match = re.search(r'^ARGS="([^"]*)"', default, re.M)
    assert match, default
    port = free_port()
    command = [
        "chroot", str(root), "setpriv", f"--reuid={PKG}", f"--regid={PKG}", "--init-groups",
        f"/usr/bin/{PKG}", *shlex.split(match.group(1)),
        f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    log_path = root / "tmp" / "exporter.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
        version = (REPO / "debian/changelog").read_text().split("(", 1)[1].split(")", 1)[0]
        assert re.search(
            rf'^l2tp_ipsec_exporter_build_info\{{.*version="{re.escape(version)}".*\}} 1\.0$',
            body, re.M,
        ), body[:2000]  # fmt: skip
        assert "strongswan_up 0.0" in body  # no charon in the chroot
        # It is the package's interpreter and code, inside the chroot.
        exe = os.readlink(f"/proc/{proc.pid}/exe")
        assert exe.startswith(f"{root}/usr/bin/python3.11"), exe
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0] == f"/usr/lib/{PKG}/bin/python3.11".encode(), cmdline
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not processes_in(root)


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_installed_unit(installed: Installed) -> None:
    root = installed.root
    unit = root / "lib/systemd/system" / f"{PKG}.service"
    result = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", f"--root={root}", f"/lib/systemd/system/{unit.name}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert unit.name not in result.stderr, result.stderr


def test_reinstall_then_purge_leaves_nothing(installed: Installed) -> None:
    """Last (it removes the package): the upgrade path's prerm/postinst (a reinstall) and
    a purge, after which none of the package's paths is left — the bytecode postinst
    compiled included, which dpkg alone would leave behind."""
    root = installed.root
    deb = f"/tmp/{installed.built.deb.name}"
    chroot(root, "dpkg", "-i", deb)
    venv = root / "usr/lib" / PKG
    assert list((venv / "lib/python3.11/site-packages/exporter").glob("__pycache__/*.pyc"))
    chroot(root, "apt-get", "purge", "-y", "-qq", PKG)
    paths = [
        f"usr/lib/{PKG}", f"usr/bin/{PKG}", f"etc/{PKG}", f"etc/default/{PKG}",
        f"etc/ppp/ip-up.d/{PKG}", f"etc/ppp/ip-down.d/{PKG}",
        f"lib/systemd/system/{PKG}.service", f"usr/lib/sysusers.d/{PKG}.conf",
    ]  # fmt: skip
    left = [path for path in paths if (root / path).exists()]
    assert not left, left
