"""debian/requirements.txt (the wheels the .deb bundles) against pyproject.toml: every
dependency pinned to one version its specifier admits, with hashes (pip's
--require-hashes mode); the build's setuptools admitted by [build-system]. No network:
the build itself (tests/package/test_deb.py) checks the hashes and `pip check`s the
transitive dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its sha256 hashes)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, eq, version = spec.partition("==")
        assert eq, f"{path.name}: not pinned with ==: {spec}"
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        key = canonicalize_name(name)
        assert key not in found, f"{path.name}: {name} twice"
        found[key] = (Version(version), hashes)
    return found


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    pinned = pins(REPO / "debian/requirements.txt")
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pinned, f"debian/requirements.txt lacks {req.name}"
        version, hashes = pinned[name]
        assert req.specifier.contains(version), f"{req.name}=={version} is not {req.specifier}"
        assert hashes, f"{req.name}: no hash"


def test_every_pin_has_a_hash() -> None:
    for path in (REPO / "debian/requirements.txt", REPO / "debian/build-requirements.txt"):
        for name, (_, hashes) in pins(path).items():
            assert hashes, f"{path.name}: {name} has no hash"


def test_the_build_setuptools_is_what_pyproject_builds_with() -> None:
    pinned = pins(REPO / "debian/build-requirements.txt")
    for dep in PYPROJECT["build-system"]["requires"]:
        req = Requirement(dep)
        version, _ = pinned[canonicalize_name(req.name)]
        assert req.specifier.contains(version), f"{req.name}=={version} is not {req.specifier}"


def test_changelog_version_is_the_exporters() -> None:
    from exporter import __version__

    first = (REPO / "debian/changelog").read_text().splitlines()[0]
    match = re.match(r"l2tp-ipsec-exporter \(([^)]+)\) ", first)
    assert match, first
    assert match.group(1) == __version__
