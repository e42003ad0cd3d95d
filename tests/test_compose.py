"""compose.yaml is a valid Compose file (checked against the Compose specification)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent directories,
    decides; `!` re-includes."""
    excluded = False
    parts = path.split("/")
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        regex = (
            re.escape(pattern)
            .replace(r"\*\*/", "(?:.*/)?")
            .replace(r"\*\*", ".*")
            .replace(r"\*", "[^/]*")
            .replace(r"\?", "[^/]")
        )
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_docker_build_context_leaves_out_local_state() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        "ui/node_modules/react/index.js",
        "ui/dist/index.html",
        ".pgcast/pgdata/PG_VERSION",
        ".pgcast/session.key",
        "bench/out/run-20260101-000000/RESULTS.md",
        ".git/HEAD",
        ".git",
        "server/__pycache__/app.cpython-311.pyc",
        "pgcast.egg-info/PKG-INFO",
        ".mypy_cache/3.11/server/app.data.json",
    ):
        assert dockerignore_excludes(patterns, path), path


def test_docker_build_context_keeps_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        for path in ROOT.glob(source.rstrip("/") + ("/**/*" if source.endswith("/") else "")):
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and not dockerignore_excludes(patterns, relative):
                break
        else:
            pytest.fail(f"COPY {source}: nothing of it reaches the build context")
    for path in ("db/triggers.sql", "server/app.py", "ui/src/main.tsx", "ui/package-lock.json"):
        assert not dockerignore_excludes(patterns, path), path


def test_image_installs_pgcast_without_editable_mode() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs
    assert not any(re.search(r"\s(-e|--editable)\b", line) for line in installs), installs


def test_compose_asks_for_what_signing_in_needs() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    # Dev login needs a loopback listen address, which a container cannot use; WorkOS it is.
    for name in ("WORKOS_API_KEY", "WORKOS_CLIENT_ID", "PGCAST_SESSION_KEY"):
        assert re.search(rf"{name}: \$\{{{name}:\?[^}}]+\}}", compose), name
