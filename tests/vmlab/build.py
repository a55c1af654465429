#!/usr/bin/env python3
"""Build (or find in the cache) the emulated guest images for the vmlab tests.

One image per Debian release (bookworm = Debian 12, trixie = Debian 13): that release's
pinned kernel, a tiny busybox initramfs and a debootstrap'd root file system with
strongSwan, xl2tpd and pppd, and Libreswan unpacked beside strongSwan (its .deb's files: the
two packages conflict in dpkg, their files do not where the guest uses them; see
docs/vmlab.md). The server flavour is chosen at boot. An image holds no project code:
the guest mounts the checkout and the Python dependencies over 9p at boot, so code
changes need no rebuild. The guest-side scripts live in ``tests/vmlab/guest/`` for
the same reason.

Everything is cached outside the checkout, keyed on a hash of the build inputs:

    <cache>/image-<key>/   vmlinuz, initrd.img, root.ext4, manifest.json
    <cache>/pydeps-<key>/  site/ (unpacked wheels for the release's CPython)

``<cache>`` is ``$VMLAB_CACHE`` or ``/var/cache/l2tp-ipsec-exporter/vmlab``.
``python3 tests/vmlab/build.py`` builds every release and prints the image directories
(``--release trixie`` for one); on a hit it returns at once. Building needs root
(debootstrap, chroot) and the Debian packages ``debootstrap busybox-static e2fsprogs``.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class Release(NamedTuple):
    """One Debian release the guest is built from."""

    suite: str
    debian: int
    # The pinned kernel: the suite's main archive must still carry it; override with
    # VMLAB_KERNEL_<SUITE>=linux-image-...=VERSION when the archive moved on.
    kernel: str
    python: str  # the suite's python3, for the dependency wheels
    glibc_minor: int  # the suite's glibc 2.N, the newest manylinux tag the wheels may carry


# Pinned inputs. Changing any of them (or this file) changes the cache keys.
RELEASES = {
    "bookworm": Release("bookworm", 12, "linux-image-6.1.0-50-amd64=6.1.176-1", "3.11", 36),
    "trixie": Release("trixie", 13, "linux-image-6.12.117+deb13-amd64=6.12.117-1", "3.13", 41),
}
DEFAULT_RELEASE = "bookworm"
# Unpacked (its files, not dpkg -i) beside strongSwan (Debian declares them conflicting); its
# dependencies are installed by debootstrap. Not pinned, like strongSwan: the
# manifest records the version.
LIBRESWAN = "libreswan"
# A virtual package debootstrap does not resolve: the real package that provides it.
VIRTUAL = {"host": "bind9-host"}
PACKAGES = (
    "strongswan-charon",
    "strongswan-swanctl",
    "libcharon-extra-plugins",
    "libcharon-extauth-plugins",
    "xl2tpd",
    "ppp",
    "iproute2",
    "python3",
    "kmod",
    "procps",
    "iputils-ping",
)
# Module directories (under lib/modules/<ver>/kernel/) copied into the root file system.
MODULE_DIRS = (
    "crypto",
    "arch/x86/crypto",
    "lib",
    "net/xfrm",
    "net/ipv4",
    "net/ipv6",
    "net/key",
    "net/l2tp",
    "net/core",
    "net/netfilter",  # the NAT router: nf_tables, nf_nat, conntrack, masquerade
    "net/9p",
    "net/bridge",
    "net/802",
    "net/llc",
    "drivers/net/ppp",
    "drivers/net/slip",
    "drivers/net/veth.ko",
    "drivers/net/tun.ko",
    "drivers/net/virtio_net.ko",
    "drivers/net/net_failover.ko",
    "drivers/virtio",
    "drivers/block/virtio_blk.ko",
    "drivers/char/hw_random",
    "fs/9p",
    "fs/netfs",
    "fs/fscache",
    "fs/ext4",
    "fs/jbd2",
    "fs/mbcache.ko",
)
# Modules the initramfs loads (with their dependencies) to mount the root disk.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")  # ext4 softdep: crc32c
DEFAULT_CACHE = "/var/cache/l2tp-ipsec-exporter/vmlab"

INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "vmlab: initramfs" > /dev/console
for m in $(cat /modules.order); do insmod "/mods/$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "vmlab: VMLAB-FAIL no root"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/vmlab-init
"""

# The image's own init: mounts the run-time shares and hands over to the guest
# script that lives in the checkout (tests/vmlab/guest/init.sh).
ROOT_INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
modprobe 9pnet_virtio
modprobe 9p
mkdir -p /mnt/src /mnt/pydeps
opts=trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro
mount -t 9p -o $opts src /mnt/src
mount -t 9p -o $opts pydeps /mnt/pydeps
if [ -x /mnt/src/tests/vmlab/guest/init.sh ] || [ -f /mnt/src/tests/vmlab/guest/init.sh ]; then
    exec /bin/sh /mnt/src/tests/vmlab/guest/init.sh
fi
echo "vmlab: VMLAB-FAIL no guest init on the src share" > /dev/console
echo o > /proc/sysrq-trigger
"""

STRIP_PATHS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/log",
)


def log(msg: str) -> None:
    print(f"vmlab-build: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("VMLAB_CACHE", DEFAULT_CACHE))


def release(name: str | None = None) -> Release:
    name = name or os.environ.get("VMLAB_RELEASE") or DEFAULT_RELEASE
    if name not in RELEASES:
        raise SystemExit(f"vmlab-build: unknown release {name!r} (one of {', '.join(RELEASES)})")
    return RELEASES[name]


def kernel_package(rel: Release) -> str:
    return os.environ.get(f"VMLAB_KERNEL_{rel.suite.upper()}", rel.kernel)


def image_key(name: str | None = None) -> str:
    rel = release(name)
    h = hashlib.sha256()
    # The builder's syntax tree, not its text: reformatting or comments need no rebuild.
    h.update(ast.dump(ast.parse(Path(__file__).read_text())).encode())
    h.update(kernel_package(rel).encode())
    h.update(json.dumps([rel, LIBRESWAN, PACKAGES, MODULE_DIRS, INITRAMFS_MODULES]).encode())
    return h.hexdigest()[:16]


def requirements() -> list[str]:
    """The project's runtime dependencies, read from pyproject.toml."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def pydeps_key(name: str | None = None) -> str:
    rel = release(name)
    h = hashlib.sha256()
    h.update(json.dumps([rel.python, rel.glibc_minor, sorted(requirements())]).encode())
    return h.hexdigest()[:16]


def image_dir(name: str | None = None) -> Path:
    return cache_root() / f"image-{image_key(name)}"


def pydeps_dir(name: str | None = None) -> Path:
    return cache_root() / f"pydeps-{pydeps_key(name)}"


# This module's syntax tree is the guest image's cache key (image_key): a typed signature
# would rebuild the image, so the overload mypy cannot pick through **kw stays ignored.
def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def apt_mirror() -> str:
    """The Debian mirror apt is configured with for bookworm main (VMLAB_MIRROR
    overrides); every release is fetched from it."""
    if os.environ.get("VMLAB_MIRROR"):
        return os.environ["VMLAB_MIRROR"]
    candidates: list[str] = []
    src = Path("/etc/apt")
    for f in sorted(src.glob("sources.list.d/*.sources")):
        for stanza in f.read_text().split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (ln.partition(":") for ln in stanza.splitlines())
                if not k.startswith("#") and v
            )
            suites = fields.get("suites", "").split()
            if "bookworm" in suites and "main" in fields.get("components", "").split():
                candidates += fields.get("uris", "").split()
    lists = [src / "sources.list", *sorted(src.glob("sources.list.d/*.list"))]
    for f in lists:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
            if m and m.group(2) == "bookworm" and "main" in m.group(3).split():
                candidates.append(m.group(1))
    if not candidates:
        raise SystemExit("vmlab-build: no apt source for bookworm main; set VMLAB_MIRROR")
    return candidates[0]


# --- initramfs ------------------------------------------------------------------


def _newc_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    nameb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0]
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = hdr + nameb
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def write_cpio(entries: Iterable[tuple[str, int, bytes]], dest: Path) -> None:
    """A gzip'd newc archive, written without the cpio tool (one fewer package)."""
    buf = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        buf.write(_newc_entry(name, mode, data, ino))
    buf.write(_newc_entry("TRAILER!!!", 0))
    dest.write_bytes(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


def module_order(moddir: Path, names: Iterable[str]) -> list[str]:
    """Paths (relative to moddir) of ``names`` and their dependencies, in load order."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps[path]:
            visit(d)
        order.append(path)

    for n in names:
        if n in by_name:
            visit(by_name[n])
    return order


def build_initramfs(moddir: Path, dest: Path) -> None:
    busybox = next((c for c in ("/bin/busybox", "/usr/bin/busybox") if Path(c).exists()), None)
    if busybox is None or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        raise SystemExit("vmlab-build: needs a static busybox (apt-get install busybox-static)")
    order = module_order(moddir, INITRAMFS_MODULES)
    entries: list[tuple[str, int, bytes]] = []
    for d in ("bin", "dev", "proc", "sys", "newroot", "mods"):
        entries.append((d, 0o040755, b""))
    entries.append(("bin/busybox", 0o100755, Path(busybox).read_bytes()))
    entries.append(("init", 0o100755, INITRAMFS_INIT.encode()))
    names = []
    for p in order:
        name = Path(p).name
        data = (moddir / p).read_bytes()
        if name.endswith(".xz"):  # busybox insmod takes plain modules (trixie's are .ko.xz)
            name, data = name[: -len(".xz")], lzma.decompress(data)
        names.append(name)
        entries.append((f"mods/{name}", 0o100644, data))
    entries.append(("modules.order", 0o100644, "\n".join(names).encode() + b"\n"))
    write_cpio(entries, dest)


# --- root file system -------------------------------------------------------------


def strip_root(root: Path) -> None:
    for rel in STRIP_PATHS:
        p = root / rel
        if p.is_dir():
            shutil.rmtree(p)
            p.mkdir(parents=True, exist_ok=True)
    for p in root.glob("usr/lib/python3*/**/__pycache__"):
        shutil.rmtree(p, ignore_errors=True)


def copy_modules(kroot: Path, root: Path, kver: str) -> None:
    src = kroot / "lib/modules" / kver
    if not src.exists():  # trixie's kernel package is merged-/usr
        src = kroot / "usr/lib/modules" / kver
    dst = root / "lib/modules" / kver
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "kernel").mkdir(parents=True)
    for rel in MODULE_DIRS:
        s = src / "kernel" / rel
        if not s.exists() and rel.endswith(".ko"):  # trixie's modules are .ko.xz
            s, rel = s.with_name(s.name + ".xz"), rel + ".xz"
        if not s.exists():
            log(f"note: kernel has no {rel}")
            continue
        d = dst / "kernel" / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)
    for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (src / f).exists():
            shutil.copy2(src / f, dst / f)
    run(["depmod", "-b", str(root), kver])


def dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


class Apt:
    """apt-get on one suite's main archive with its own state: the host's apt sources,
    lists and dpkg status are neither read nor changed."""

    def __init__(self, work: Path, suite: str, mirror: str) -> None:
        self.dir = work / "apt"
        for d in ("lists/partial", "cache/archives/partial"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        (self.dir / "sources.list").write_text(f"deb [signed-by={keyring}] {mirror} {suite} main\n")
        (self.dir / "status").write_text("")
        self.opts = [
            f"-oDir::Etc::sourcelist={self.dir / 'sources.list'}",
            "-oDir::Etc::sourceparts=-",
            f"-oDir::State::Lists={self.dir / 'lists'}",
            f"-oDir::State::status={self.dir / 'status'}",
            f"-oDir::Cache={self.dir / 'cache'}",
            "-oAPT::Sandbox::User=root",
        ]
        run(["apt-get", "-q", *self.opts, "update"], capture_output=True)

    def download(self, pkg: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        run(["apt-get", "-q", *self.opts, "download", pkg], cwd=into, capture_output=True)
        name = pkg.split("=")[0]
        return next(into.glob(f"{name}_*.deb"))


def deb_depends(deb: Path) -> list[str]:
    """The packages a .deb depends on: the first of each alternative, no versions,
    virtual names replaced by the package that provides them."""
    field = run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True).stdout
    out = []
    for dep in field.split(","):
        name = dep.split("|")[0].split("(")[0].split(":")[0].strip()
        if name:
            out.append(VIRTUAL.get(name, name))
    return out


def build_image(dest: Path, rel: Release) -> dict[str, object]:
    if os.geteuid() != 0:
        raise SystemExit("vmlab-build: building the image needs root (debootstrap)")
    for tool in ("debootstrap", "mkfs.ext4", "dpkg", "dpkg-deb", "apt-get", "depmod"):
        if shutil.which(tool) is None:
            raise SystemExit(f"vmlab-build: {tool} missing")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=dest.parent))
    try:
        mirror = apt_mirror()
        apt = Apt(work, rel.suite, mirror)
        kpkg = kernel_package(rel)
        log(f"{rel.suite}: fetching {kpkg} and {LIBRESWAN}")
        deb = apt.download(kpkg, work / "kdl")
        swan_deb = apt.download(LIBRESWAN, work / "swdl")
        kroot = work / "kernel"
        run(["dpkg", "-x", str(deb), str(kroot)])
        vmlinuz = next((kroot / "boot").glob("vmlinuz-*"))
        kver = vmlinuz.name[len("vmlinuz-") :]

        root = work / "root"
        include = list(PACKAGES) + [d for d in deb_depends(swan_deb) if d not in PACKAGES]
        log(f"debootstrap {rel.suite} ({len(include)} packages)")
        t1 = time.monotonic()
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(include),
                rel.suite,
                str(root),
                mirror,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        t_deboot = time.monotonic() - t1
        versions = run(
            ["chroot", str(root), "dpkg-query", "-W", "-f=${Package}=${Version}\n"],
            capture_output=True,
        ).stdout.split()
        # Libreswan beside strongSwan: its ipsec, ipsec.conf and ipsec.secrets replace
        # strongswan-starter's, which the guest never uses (it runs charon and swanctl).
        # Not dpkg -x: it would put a directory over bookworm's merged-/usr /lib symlink.
        tarball = work / "libreswan.tar"
        with open(tarball, "wb") as f:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(swan_deb)], stdout=f, check=True)
        run(["tar", "-x", "--keep-directory-symlink", "-f", str(tarball), "-C", str(root)])
        swan_version = run(["dpkg-deb", "-f", str(swan_deb), "Version"], capture_output=True)
        versions.append(f"{LIBRESWAN}={swan_version.stdout.strip()} (unpacked)")
        nss = root / "var/lib/ipsec/nss"
        nss.mkdir(parents=True, exist_ok=True)
        # pluto's NSS database, as 'ipsec initnss' makes it.
        certutil = ["certutil", "-N", "-d", "sql:/var/lib/ipsec/nss", "--empty-password"]
        run(["chroot", str(root), *certutil], capture_output=True)
        strip_root(root)
        copy_modules(kroot, root, kver)
        (root / "sbin/vmlab-init").write_text(ROOT_INIT)
        (root / "sbin/vmlab-init").chmod(0o755)
        (root / "etc/hostname").write_text("vmlab\n")
        for d in ("mnt/src", "mnt/pydeps"):
            (root / d).mkdir(parents=True, exist_ok=True)

        out = work / "out"
        out.mkdir()
        shutil.copy2(vmlinuz, out / "vmlinuz")
        build_initramfs(root / "lib/modules" / kver, out / "initrd.img")
        used = dir_size(root)
        size_mb = int(used * 1.25 / 2**20) + 96
        log(f"mkfs.ext4 ({used // 2**20} MiB used, {size_mb} MiB image)")
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "vmlabroot",
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-d",
                str(root),
                str(out / "root.ext4"),
                f"{size_mb}M",
            ]
        )
        manifest = {
            "key": dest.name,
            "release": rel.suite,
            "debian": rel.debian,
            "kernel_package": kpkg,
            "kernel_release": kver,
            "suite": rel.suite,
            "python": rel.python,
            "packages": include,
            "installed": versions,
            "root_used_bytes": used,
            "root_image_bytes": (out / "root.ext4").stat().st_size,
            "initrd_bytes": (out / "initrd.img").stat().st_size,
            "vmlinuz_bytes": (out / "vmlinuz").stat().st_size,
            "debootstrap_seconds": round(t_deboot, 1),
            "build_seconds": round(time.monotonic() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def manylinux_platforms(rel: Release) -> list[str]:
    # pip does not widen an explicit --platform to older glibc tags: list them.
    plats = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    plats += [f"manylinux_2_{n}_x86_64" for n in range(5, rel.glibc_minor + 1)]
    return plats


def build_pydeps(dest: Path, rel: Release) -> None:
    """Unpack wheels of the runtime dependencies for the release's CPython."""
    work = Path(tempfile.mkdtemp(prefix="pydeps-", dir=dest.parent))
    try:
        wheels = work / "wheels"
        site = work / "site"
        plat: list[str] = []
        for p in manylinux_platforms(rel):
            plat += ["--platform", p]
        abi = "cp" + rel.python.replace(".", "")
        common = [
            "--only-binary=:all:",
            *plat,
            "--python-version",
            rel.python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        log(f"pip download for CPython {rel.python}: " + " ".join(requirements()))
        run([*pip, "download", "-d", str(wheels), *common, *requirements()])
        run(
            [
                *pip,
                "install",
                "--no-index",
                "--find-links",
                str(wheels),
                "--target",
                str(site),
                "--no-compile",
                *common,
                *requirements(),
            ]
        )
        out = work / "out"
        out.mkdir()
        wheels.rename(out / "wheels")
        site.rename(out / "site")
        (out / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure(name: str | None = None, force: bool = False) -> tuple[Path, Path]:
    """Return (image dir, pydeps dir) of a release, building what the cache lacks."""
    rel = release(name)
    img, deps = image_dir(rel.suite), pydeps_dir(rel.suite)
    if not force and (img / "manifest.json").exists() and (deps / "requirements.txt").exists():
        return img, deps  # a hit needs no lock, so no write access to the cache
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        img = image_dir(rel.suite)
        if force or not (img / "manifest.json").exists():
            m = build_image(img, rel)
            log(
                f"built {img} in {m['build_seconds']} s "
                f"(root.ext4 {int(m['root_image_bytes']) // 2**20} MiB)"  # type: ignore[call-overload]
            )
        deps = pydeps_dir(rel.suite)
        if force or not (deps / "requirements.txt").exists():
            build_pydeps(deps, rel)
            log(f"built {deps}")
        prune()
    return img, deps


def in_use() -> str:
    """The command lines of the running processes (a QEMU names its image and share)."""
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(out)


def prune() -> None:
    """Drop images and dependency sets of other build inputs: the cache holds one per
    release, plus any a running guest still uses."""
    keep = {image_dir(r).name for r in RELEASES} | {pydeps_dir(r).name for r in RELEASES}
    running = in_use()
    for p in cache_root().iterdir():
        if (
            p.is_dir()
            and p.name.startswith(("image-", "pydeps-"))
            and p.name not in keep
            and str(p) not in running
        ):
            log(f"removing stale {p}")
            shutil.rmtree(p, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--release",
        action="append",
        choices=sorted(RELEASES),
        help="build this release only (repeatable); default: every release",
    )
    ap.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    ap.add_argument("--key", action="store_true", help="print the cache keys and exit")
    ap.add_argument("--pydeps", action="store_true", help="also print the pydeps dirs")
    args = ap.parse_args(argv)
    names = args.release or list(RELEASES)
    for name in names:
        if args.key:
            print(name, image_key(name), pydeps_key(name))
            continue
        img, deps = ensure(name, force=args.force)
        print(img)
        if args.pydeps:
            print(deps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
