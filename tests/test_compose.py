"""compose.yaml is a valid Compose file (checked against the Compose specification) that
runs several replicas behind HAProxy, whose configuration (deploy/haproxy.cfg) HAProxy
accepts; tests/test_proxy.py runs that configuration in front of real pgcast processes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.cli import SHUTDOWN_TIMEOUT_SECONDS
from server.transports.pusher.keys import Timing
from server.transports.websocket import HEARTBEAT_SECONDS

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


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def proxy_config() -> str:
    return (ROOT / "deploy" / "haproxy.cfg").read_text()


def test_compose_runs_several_replicas_that_a_one_shot_service_migrated_first() -> None:
    services = compose()["services"]
    app, migrate = services["app"], services["migrate"]
    assert app["deploy"]["replicas"] >= 2
    assert app["command"] == ["pgcast", "serve", "--no-migrate"]
    assert app["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert app["depends_on"]["db"] == {"condition": "service_healthy"}
    assert migrate["command"] == ["pgcast", "migrate"]
    assert migrate["depends_on"]["db"] == {"condition": "service_healthy"}
    assert migrate["restart"] == "no"
    # One image, one environment: the migrations are those of the code that serves.
    assert app["image"] == migrate["image"]
    assert app["environment"] == migrate["environment"]
    # Replicas are reached through the proxy only, and checked as the proxy checks them.
    assert "ports" not in app
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    # pgcast's own shutdown: sockets closed at once, requests given up to 10 s.
    assert int(app["stop_grace_period"].rstrip("s")) > SHUTDOWN_TIMEOUT_SECONDS + 2


def test_replicas_share_a_data_directory_so_generated_credentials_agree() -> None:
    app = compose()["services"]["app"]
    data_dir = app["environment"]["PGCAST_DATA_DIR"]
    assert any(volume.endswith(":" + data_dir) for volume in app["volumes"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"-o pgcast -g pgcast -m 0700 {data_dir}" in dockerfile
    # Every socket's TCP peer is the proxy: the per-address limit is the proxy's.
    assert app["environment"]["PGCAST_RATE_SOCKETS_PER_IP"] == "0"
    assert re.search(r"reject if \{ sc0_conn_cur gt \d+ \}", proxy_config())


def test_compose_puts_the_proxy_in_front_with_its_configuration() -> None:
    services = compose()["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert proxy["ports"] == ["127.0.0.1:8080:8080"]
    assert proxy["depends_on"]["app"] == {"condition": "service_healthy"}
    template = re.search(r"^\s*server-template\s+\S+\s+(\d+)\s+app:8080\s*$", proxy_config(), re.M)
    assert template is not None
    assert int(template.group(1)) >= services["app"]["deploy"]["replicas"]


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip("haproxy is not installed (make test installs Debian's package)")
    return found


def test_proxy_configuration_is_valid_for_haproxy() -> None:
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match is not None, value
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 0.001}[match.group(2)]
    return int(match.group(1)) * scale


def test_proxy_keeps_sockets_longer_than_pgcast_lets_them_idle_and_sticks_to_nothing() -> None:
    config = proxy_config()
    timeouts = dict(re.findall(r"^\s*timeout\s+(\S+)\s+(\S+)\s*$", config, re.M))
    tunnel = seconds(timeouts["tunnel"])
    # /ws: a ping every HEARTBEAT_SECONDS; Pusher: a ping after activity_timeout of silence.
    longest_silence = max(HEARTBEAT_SECONDS, Timing().activity_timeout)
    assert tunnel >= 2 * longest_silence + Timing().pong_timeout
    assert "option httpchk" in config
    assert re.search(r"http-check send meth GET uri /readyz\b", config)
    for sticky in ("cookie ", "stick on", "stick match", "balance source", "balance uri"):
        assert sticky not in config
