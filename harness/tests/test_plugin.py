"""The pytest plugin, seen from outside: a fresh pytest run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A test that kills its server, and one after it that needs it running again.
KILL_THEN_USE = """
import pytest

@pytest.mark.restart
def test_a_kills_the_server(pg_server):
    pg_server.kill()
    assert not pg_server.is_running()

def test_b_finds_it_running_again(pg_server):
    assert pg_server.is_running()
    assert pg_server.admin_execute("SELECT 1") == [(1,)]

def test_c_ids(driver_target, request):
    assert request.node.callspec.id == driver_target.name

def test_d_marker(request, dbapi_target):
    marked = request.node.get_closest_marker("server") is not None
    assert marked == (dbapi_target.name != "sqlite3")
"""

# The local PostgreSQL binaries "missing".
NO_BINARIES = """
import tether.harness.servers as servers
import tether.harness.servers.postgres as postgres

def _missing():
    raise servers.ServerUnavailableError(
        "PostgreSQL server binaries not found. Install them: " + servers.INSTALL_HINT
    )

postgres._find_pg_bindir = _missing
"""


def _run_pytest(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("TETHER_PG_DSN", "TETHER_MARIADB_DSN", "CI", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    env["TETHER_USE_DOCKER"] = "0"
    env.update(extra_env)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tether.harness.pytest_plugin", "-v", "-rA"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.server
def test_a_killed_server_is_started_again_for_the_next_test(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(KILL_THEN_USE)
    result = _run_pytest(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 passed" in result.stdout, result.stdout
    for name in ("psycopg", "pgdb", "pg", "pymysql", "sqlite3"):
        assert f"test_c_ids[{name}] PASSED" in result.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_server_is_an_error_not_a_skip(tmp_path: Path, ci: str) -> None:
    (tmp_path / "conftest.py").write_text(NO_BINARIES)
    (tmp_path / "test_inner.py").write_text("def test_needs_pg(pg_server):\n    pass\n")
    result = _run_pytest(tmp_path, {"CI": ci} if ci else {})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert "apt-get install -y postgresql libpq-dev mariadb-server" in result.stdout
    assert ("CI=true" in result.stdout) == bool(ci)
