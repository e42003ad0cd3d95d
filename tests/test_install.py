"""A non-editable install (what the Docker image has) finds its SQL and UI under
<prefix>/share/pgcast and migrates a database from outside any checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psycopg

from tests.conftest import drop_database

ROOT = Path(__file__).resolve().parent.parent


def test_installed_package_migrates_from_outside_the_checkout(
    postgres_conninfo: str, tmp_path: Path
) -> None:
    # What `pip install .` lays down for this pure-Python package (pyproject's packages =
    # ["server"]) and what the Dockerfile copies beside it; built here without a network.
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    shutil.copytree(ROOT / "server", site / "server", ignore=shutil.ignore_patterns("__pycache__"))
    # The dependencies come from this environment; pgcast itself only from the copy.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    share = prefix / "share" / "pgcast"
    shutil.copytree(ROOT / "db", share / "db")
    (share / "ui" / "dist").mkdir(parents=True)
    (share / "ui" / "dist" / "index.html").write_text("<!doctype html><title>pgcast</title>")

    python = str(prefix / "bin" / "python")
    where = subprocess.run(
        [
            python,
            "-c",
            "import server.app as a, server.migrate as m; print(m.__file__, m.DB_DIR, a.UI_DIST)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [
        str(site / "server" / "migrate.py"),
        str(share / "db"),
        str(share / "ui" / "dist"),
    ]

    name = "pgcast_installed_migrate"
    with psycopg.connect(postgres_conninfo, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        url = psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "PGCAST_DATA_DIR": str(tmp_path / "d")}
        result = subprocess.run(
            [python, "-m", "server", "migrate"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        migrations = len(list((ROOT / "db" / "migrations").glob("*.sql")))
        assert result.stdout.startswith(f"applied {migrations} migration(s)")
    finally:
        drop_database(postgres_conninfo, name)


def test_a_regular_install_carries_every_package_of_the_server() -> None:
    import tomllib

    from setuptools import find_packages

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = settings["tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(str(ROOT), include=include))
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "server").rglob("__init__.py")
    }
    assert on_disk <= packaged, sorted(on_disk - packaged)
    assert {"server", "server.core", "server.pg", "server.transports"} <= packaged
