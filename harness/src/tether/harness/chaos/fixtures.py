"""pytest fixtures for chaos tests: a toxiproxy server per process, a proxy per database.

Load them in a ``conftest.py`` (the chaos suite does) with::

    from tether.harness.chaos.fixtures import *  # noqa: F403

``toxiproxy_server`` (session)
    A started :class:`~tether.harness.toxiproxy.ToxiproxyServer` of this
    process (each pytest-xdist worker has its own), or the server
    ``TETHER_TOXIPROXY_URL`` names. No binary is a test error, never a skip.
``pg_proxy``, ``mariadb_proxy`` (session)
    A proxy in front of this process's ``pg_server`` / ``mariadb_server``
    (names carry the worker id, so workers sharing an external toxiproxy do
    not collide). Deleted at the end of the session.
``chaos_env`` (function)
    A :class:`~tether.harness.chaos.runner.ChaosEnvironment` for the driver
    the test parametrizes as ``chaos_driver``: a driver target aimed at this
    process's server (its tables dropped after the test) and the proxy in
    front of that server, reset (no toxics, enabled) before and after.
``chaos_results`` (session)
    The folder reports go to (``--chaos-results``, ``TETHER_CHAOS_RESULTS``,
    else ``<rootdir>/results/chaos``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..servers import DatabaseServer
from ..targets import DriverTarget, server_kind
from ..toxiproxy import Proxy, ToxiproxyError, ToxiproxyServer, provide_toxiproxy, proxy_for
from .report import default_results_dir
from .runner import ChaosEnvironment

__all__ = ["chaos_env", "chaos_results", "mariadb_proxy", "pg_proxy", "toxiproxy_server"]

log = logging.getLogger("tether.harness.chaos")

_SERVER_FIXTURES = {"postgresql": "pg_server", "mariadb": "mariadb_server"}
_PROXY_FIXTURES = {"postgresql": "pg_proxy", "mariadb": "mariadb_proxy"}


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.fixture(scope="session")
def toxiproxy_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ToxiproxyServer]:
    """This process's toxiproxy server (or the external one ``TETHER_TOXIPROXY_URL`` names)."""
    worker = _worker_id(request.config)
    log_path = tmp_path_factory.mktemp(f"toxiproxy-{worker}") / "toxiproxy.log"
    try:
        server = provide_toxiproxy(log_path)
    except ToxiproxyError as exc:
        pytest.fail(f"No toxiproxy server for the chaos tests: {exc}", pytrace=False)
    log.info("worker %s: %r", worker, server)
    try:
        yield server
    finally:
        server.close()


def _proxy(request: pytest.FixtureRequest, server: DatabaseServer, toxi: ToxiproxyServer) -> Proxy:
    name = f"tether-{server.kind}-{_worker_id(request.config)}-{os.getpid()}"
    return proxy_for(toxi.client, server, name)


@pytest.fixture(scope="session")
def pg_proxy(
    request: pytest.FixtureRequest, toxiproxy_server: ToxiproxyServer, pg_server: DatabaseServer
) -> Iterator[Proxy]:
    """A toxiproxy proxy in front of this process's PostgreSQL server."""
    proxy = _proxy(request, pg_server, toxiproxy_server)
    yield proxy
    with contextlib.suppress(ToxiproxyError):
        proxy.delete()


@pytest.fixture(scope="session")
def mariadb_proxy(
    request: pytest.FixtureRequest,
    toxiproxy_server: ToxiproxyServer,
    mariadb_server: DatabaseServer,
) -> Iterator[Proxy]:
    """A toxiproxy proxy in front of this process's MariaDB server."""
    proxy = _proxy(request, mariadb_server, toxiproxy_server)
    yield proxy
    with contextlib.suppress(ToxiproxyError):
        proxy.delete()


@pytest.fixture
def chaos_env(
    request: pytest.FixtureRequest, chaos_driver: str, tmp_path: Path
) -> Iterator[ChaosEnvironment]:
    """The driver ``chaos_driver`` aimed at this process's server, and the proxy in front
    of that server, reset (no toxics, enabled) around the test.

    Parametrize ``chaos_driver`` (``psycopg``, ``pgdb``, ``pg``, ``pymysql``) directly::

        @pytest.mark.parametrize("chaos_driver", ["pymysql"])
        def test_x(chaos_env): ...
    """
    kind = server_kind(chaos_driver)
    if kind is None:
        pytest.fail(f"chaos tests need a server driver, got {chaos_driver!r}", pytrace=False)
    server: DatabaseServer = request.getfixturevalue(_SERVER_FIXTURES[kind])
    proxy: Proxy = request.getfixturevalue(_PROXY_FIXTURES[kind])
    server.ensure_running()
    target = DriverTarget.build(chaos_driver, server, workdir=tmp_path)
    target.ignore_existing_sessions()
    proxy.reset()
    try:
        yield ChaosEnvironment(target, proxy)
    finally:
        with contextlib.suppress(ToxiproxyError):
            proxy.reset()
        target.cleanup()


@pytest.fixture(scope="session")
def chaos_results(request: pytest.FixtureRequest) -> Path:
    """Where scenario reports go."""
    option = request.config.getoption("--chaos-results", default=None)
    folder = Path(option) if option else default_results_dir(request.config.rootpath)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
