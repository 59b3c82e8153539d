"""SimplePooledDB's ``timeout`` bounds the connect that replaces a discarded connection."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.harness.deadlines import within
from tether.harness.toxiproxy import Proxy, ToxiproxyServer, provide_toxiproxy, proxied_target
from tether.harness.toxiproxy import proxy_for as make_proxy
from tether.simple_pool import SimplePooledDB
from tether.simple_pool.errors import PoolTimeout


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    server = provide_toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb"], indirect=True)
@pytest.mark.parametrize("timeout", [0.3, 2.5])
def test_the_replacement_connect_is_bounded_by_the_timeout_under_a_blackhole(
    dbapi_target: Any, toxiproxy: ToxiproxyServer, timeout: float
) -> None:
    proxy: Proxy = make_proxy(
        toxiproxy.client, dbapi_target.server, f"h11s-{dbapi_target.name}-{os.getpid()}-{timeout}"
    )
    target = proxied_target(dbapi_target, proxy)
    pool = SimplePooledDB(target.creator, 1, *target.args, timeout=timeout, **target.kwargs)
    try:
        db = pool.connection()
        cursor = db.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        cursor.close()
        assert dbapi_target.kill_backend(pid)
        with pytest.raises(target.module.Error):
            cursor = db.cursor()
            cursor.execute("SELECT 1")
        db.close()  # cannot be cleaned: discarded, its place kept
        del db, cursor
        toxic = proxy.add_toxic("timeout", {"timeout": 0})
        lift = threading.Timer(8, proxy.remove_toxic, (toxic.name,))  # never hang the test
        lift.start()
        try:
            start = time.monotonic()
            with pytest.raises(PoolTimeout):
                pool.connection()
            elapsed = time.monotonic() - start
        finally:
            lift.cancel()
            with contextlib.suppress(Exception):
                proxy.remove_toxic(toxic.name)
        assert elapsed <= within(timeout), f"took {elapsed:.2f} s with timeout={timeout}"
        with pool.connection() as db:  # the place was freed again: a new connection opens
            cursor = db.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone()[0] == 1
            cursor.close()
    finally:
        pool.close()
        with contextlib.suppress(Exception):
            proxy.delete()
