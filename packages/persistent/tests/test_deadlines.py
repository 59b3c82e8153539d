"""Issue 11 for PersistentDB: checkout_timeout bounds the first connect; a refused login."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether.harness.toxiproxy import Proxy, ToxiproxyServer, provide_toxiproxy, proxied_target
from tether.harness.toxiproxy import proxy_for as make_proxy
from tether.persistent import PersistentDB
from tether.simple_pool.errors import AuthenticationError, PoolTimeout


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    server = provide_toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
@pytest.mark.parametrize("timeout", [2.0, 0.5])
def test_the_first_connect_is_bounded_by_checkout_timeout_under_a_blackhole(
    dbapi_target: Any, toxiproxy: ToxiproxyServer, timeout: float
) -> None:
    proxy: Proxy = make_proxy(
        toxiproxy.client, dbapi_target.server, f"h2p-{dbapi_target.name}-{os.getpid()}-{timeout}"
    )
    target = proxied_target(dbapi_target, proxy)
    persist = PersistentDB(target.creator, checkout_timeout=timeout, **target.kwargs)
    toxic = proxy.add_toxic("timeout", {"timeout": 0})
    lift = threading.Timer(8, proxy.remove_toxic, (toxic.name,))  # never hang the test
    lift.start()
    try:
        start = time.monotonic()
        # PoolTimeout at the deadline, or the driver's own connect timeout just before it
        with pytest.raises((PoolTimeout, target.module.Error)):
            persist.connection()
        elapsed = time.monotonic() - start
    finally:
        lift.cancel()
        with contextlib.suppress(Exception):
            proxy.delete()
        persist.close()
    assert elapsed <= timeout * 1.1, f"took {elapsed:.2f} s with checkout_timeout={timeout}"


@pytest.mark.parametrize("dbapi_target", ["psycopg", "pgdb", "pymysql"], indirect=True)
def test_a_wrong_password_raises_an_authentication_error(dbapi_target: Any) -> None:
    kwargs = dict(dbapi_target.kwargs)
    key = next(k for k, v in kwargs.items() if v == dbapi_target.server.password)
    kwargs[key] = "not-the-password-h2"
    persist = PersistentDB(dbapi_target.creator, **kwargs)
    try:
        with pytest.raises(AuthenticationError) as info:
            persist.connection()
    finally:
        persist.close()
    assert dbapi_target.server.user in str(info.value)
    assert "not-the-password-h2" not in str(info.value)
    assert isinstance(info.value.__cause__, dbapi_target.module.Error)
    assert persist.open_connections == 0
