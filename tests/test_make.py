"""The Makefile's two entry points: `make run` installs only what running needs and checks
the Node.js it builds the UI with; `make test` installs the test tools too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pip_installs(dry_run: str) -> list[str]:
    return [
        line
        for line in dry_run.splitlines()
        if "pip install" in line and "--upgrade pip" not in line
    ]


def test_make_run_installs_the_package_without_the_test_tools(tmp_path: Path) -> None:
    result = make("-n", "run", f"VENV={tmp_path / 'venv'}")
    assert result.returncode == 0, result.stderr
    installs = pip_installs(result.stdout)
    assert installs, result.stdout
    assert all("[test]" not in line and "[bench]" not in line for line in installs), installs
    assert all(line.rstrip().endswith(" .") or line.rstrip().endswith("'.'") for line in installs)


def test_make_test_installs_the_test_tools(tmp_path: Path) -> None:
    result = make("-n", "test", f"VENV={tmp_path / 'venv'}")
    assert result.returncode == 0, result.stderr
    assert any("[test]" in line for line in pip_installs(result.stdout)), result.stdout


def fake_node(tmp_path: Path, version: str) -> Path:
    node = tmp_path / f"node-{version}"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)
    return node


@pytest.mark.parametrize("version", ["v20.19.0", "v20.20.2", "v22.12.0", "v23.1.0", "v24.11.1"])
def test_node_check_accepts_versions_vite_runs_on(tmp_path: Path, version: str) -> None:
    result = make("node-check", f"NODE={fake_node(tmp_path, version)}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("version", ["v18.20.4", "v20.18.3", "v21.7.3", "v22.11.0"])
def test_node_check_refuses_older_nodes_with_one_line(tmp_path: Path, version: str) -> None:
    result = make("node-check", f"NODE={fake_node(tmp_path, version)}")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert ours == [f"pgcast needs Node.js 20.19+ or 22.12+ with npm; found node {version}"]


def test_node_check_says_when_node_or_npm_is_missing(tmp_path: Path) -> None:
    for setting in (f"NODE={tmp_path / 'no-node'}", f"NPM={tmp_path / 'no-npm'}"):
        result = make("node-check", setting)
        assert result.returncode != 0
        ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
        assert len(ours) == 1, result.stderr
        assert ours[0].startswith("pgcast needs Node.js 20.19+ or 22.12+ with npm; ")
        assert "not found" in ours[0]


def test_building_the_ui_checks_node_before_npm_runs(tmp_path: Path) -> None:
    # `make run` builds the UI; with too old a Node.js it stops before npm runs.
    ran = tmp_path / "npm-ran"
    npm = tmp_path / "npm"
    npm.write_text(f"#!/bin/sh\ntouch {ran}\n")
    npm.chmod(0o755)
    result = make("ui", f"NODE={fake_node(tmp_path, 'v18.0.0')}", f"NPM={npm}")
    assert result.returncode != 0
    assert "pgcast needs Node.js 20.19+ or 22.12+ with npm; found node v18.0.0" in result.stderr
    assert not ran.exists()
