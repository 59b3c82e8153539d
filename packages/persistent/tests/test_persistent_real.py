"""tether.persistent on real servers, for every driver: sessions, transactions, restarts, fork.

Each pytest-xdist worker has its own servers (tether.harness), so restarting
one disturbs no other test running at the same time. A "request" runs on a
one-thread executor, so consecutive requests run on the same thread, as in
a threaded server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tether.persistent import PersistentDB, PersistentPg, TooManyConnectionsError

pytestmark = [pytest.mark.server]

#: Ways to leave a transaction open: begin(), or a statement without commit (not for
#: PyGreSQL's classic API, which commits each statement outside begin()).
ABANDONED = pytest.mark.parametrize(
    ("server_target", "how"),
    [(name, "begin") for name in ("psycopg", "pgdb", "pg", "pymysql")]
    + [(name, "implicit") for name in ("psycopg", "pgdb", "pymysql")],
    indirect=["server_target"],
)


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def generators() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for persist in made:
        persist.close()


@pytest.fixture
def make(server_target: Any, generators: list[Any]) -> Any:
    """``make(**options)``: a persistent generator for the target's driver and server."""

    def make(**options: Any) -> Any:
        options.setdefault("ping", 0)
        target = server_target
        if target.name == "pg":
            persist: Any = PersistentPg(**options, **target.kwargs)
        else:
            persist = PersistentDB(target.creator, **options, **target.kwargs)
        generators.append(persist)
        return persist

    return make


@pytest.fixture
def worker() -> Iterator[ThreadPoolExecutor]:
    """One long-lived thread: each ``submit`` is a request on the same thread."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def rows(target: Any, con: Any, sql: str) -> list[Any]:
    """``sql`` through a tether connection, with the driver's API (the harness knows each)."""
    return target.query(con, sql)


def backend(target: Any, con: Any) -> int:
    return int(rows(target, con, target.backend_id_sql)[0][0])


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def sessions_become(target: Any, count: int) -> None:
    wait_for(lambda: target.session_count() == count)


def in_transaction_on_server(target: Any, backend_id: int, expected: bool) -> bool:
    """What the server says: is this session inside an open transaction?

    Polls until the answer is ``expected`` (for up to 2 s), then returns it:
    MariaDB refreshes information_schema.innodb_trx at most every 0.1 s.
    """
    server = target.server
    deadline = time.monotonic() + 2.0
    while True:
        if server.kind == "postgresql":
            [(state,)] = server.admin_execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (backend_id,)
            )
            assert state in ("idle", "idle in transaction"), state
            answer = state == "idle in transaction"
        else:
            [(count,)] = server.admin_execute(
                "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s",
                (backend_id,),
            )
            answer = int(count) > 0
        if answer == expected or time.monotonic() > deadline:
            return bool(answer)
        # MariaDB refreshes its innodb_trx cache only when the previous read was
        # over 0.1 s ago: polling faster would read the same stale cache forever.
        time.sleep(0.15)


def make_table(target: Any) -> str:
    table: str = target.unique_table("persist")
    target.server.admin_execute(f"CREATE TABLE {table} (x INTEGER)")
    return table


def insert(target: Any, con: Any, table: str) -> None:
    rows(target, con, f"INSERT INTO {table} VALUES (1)")


# -- thread affinity and thread death ---------------------------------------------------------


def test_one_session_per_thread(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make()
    main = backend(target, persist.connection())
    assert backend(target, persist.connection()) == main
    barrier = threading.Barrier(4)
    counted = threading.Event()
    seen: list[tuple[int, int]] = []

    def request() -> None:
        first = backend(target, persist.connection())
        barrier.wait(timeout=10)  # all threads hold a session at once
        counted.wait(timeout=10)
        seen.append((first, backend(target, persist.connection())))

    threads = [threading.Thread(target=request) for _ in range(3)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=10)
    assert target.session_count() == 4
    counted.set()
    for thread in threads:
        thread.join()
    assert all(first == again for first, again in seen)  # the same session within a thread
    assert len({first for first, _ in seen} | {main}) == 4  # another one in each thread
    sessions_become(target, 1)  # the three threads ended: their sessions too
    assert persist.open_connections == 1


def test_sessions_end_with_their_threads(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make()
    started = threading.Barrier(6)
    release = threading.Event()

    def request() -> None:
        rows(target, persist.connection(), "SELECT 1")  # no close(), no commit
        started.wait(timeout=10)
        release.wait(timeout=10)

    threads = [threading.Thread(target=request) for _ in range(5)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    assert target.session_count() == 5
    release.set()
    for thread in threads:
        thread.join()
    sessions_become(target, 0)
    assert persist.open_connections == 0


def test_many_short_threads_leave_no_sessions(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make()

    def request() -> None:
        rows(target, persist.connection(), "SELECT 1")

    for _ in range(25):
        threads = [threading.Thread(target=request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    sessions_become(target, 0)
    assert persist.open_connections == 0
    assert len(persist._shared.slots) == 0


# -- transactions left open ---------------------------------------------------------------------


@ABANDONED
def test_abandoned_transaction_is_not_left_idle_in_transaction(
    server_target: Any, make: Any, worker: ThreadPoolExecutor, how: str
) -> None:
    target = server_target
    table = make_table(target)
    persist = make()

    def forgetful_request() -> int:
        db = persist.connection()
        if how == "begin":
            db.begin()
        insert(target, db, table)
        return backend(target, db)  # returns without commit, rollback or close

    session = worker.submit(forgetful_request).result()
    # What DBUtils leaves behind: the session holds the transaction open between requests.
    assert in_transaction_on_server(target, session, True)
    worker.submit(persist.connection).result()  # the thread's next request begins
    assert not in_transaction_on_server(target, session, False)
    assert target.server.admin_execute(f"SELECT count(*) FROM {table}")[0][0] == 0
    assert worker.submit(lambda: backend(target, persist.connection())).result() == session


@ABANDONED
def test_close_rolls_back_at_once(server_target: Any, make: Any, how: str) -> None:
    target = server_target
    table = make_table(target)
    persist = make()
    db = persist.connection()
    session = backend(target, db)
    if how == "begin":
        db.begin()
    insert(target, db, table)
    assert in_transaction_on_server(target, session, True)
    db.close()  # not closeable: ends the transaction, keeps the session
    assert not in_transaction_on_server(target, session, False)
    assert backend(target, persist.connection()) == session


def test_nested_request_keeps_the_transaction(server_target: Any, make: Any) -> None:
    target = server_target
    table = make_table(target)
    persist = make()
    db = persist.connection()
    db.begin()
    insert(target, db, table)
    insert(target, persist.connection(), table)  # a helper asking for the connection again
    db.commit()
    assert target.server.admin_execute(f"SELECT count(*) FROM {table}")[0][0] == 2


# -- closeable ------------------------------------------------------------------------------------


def test_close_is_ignored_unless_closeable(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make()
    db = persist.connection()
    session = backend(target, db)
    db.close()
    assert target.session_count() == 1
    assert backend(target, persist.connection()) == session


def test_closeable_close_ends_the_session(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make(closeable=True)
    db = persist.connection()
    session = backend(target, db)
    db.close()
    sessions_become(target, 0)
    assert persist.open_connections == 0
    assert backend(target, persist.connection()) != session
    assert target.session_count() == 1


def test_generator_close_ends_idle_sessions(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make()
    idle = threading.Event()
    done = threading.Event()

    def idle_thread() -> None:
        rows(target, persist.connection(), "SELECT 1")
        idle.set()
        done.wait(timeout=10)

    thread = threading.Thread(target=idle_thread)
    thread.start()
    idle.wait(timeout=10)
    rows(target, persist.connection(), "SELECT 1")
    assert target.session_count() == 2
    persist.close()
    sessions_become(target, 0)
    done.set()
    thread.join()


# -- the cap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_target", ["psycopg", "pymysql"], indirect=True)
def test_cap_on_sessions(server_target: Any, make: Any) -> None:
    target = server_target
    persist = make(maxconnections=2)
    release = threading.Event()
    started = threading.Barrier(3)

    def holder() -> None:
        rows(target, persist.connection(), "SELECT 1")
        started.wait(timeout=10)
        release.wait(timeout=10)

    threads = [threading.Thread(target=holder) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    try:
        with pytest.raises(TooManyConnectionsError):
            persist.connection()
        assert target.session_count() == 2
    finally:
        release.set()
        for thread in threads:
            thread.join()
    rows(target, persist.connection(), "SELECT 1")


# -- the server goes away between requests ------------------------------------------------------


@pytest.mark.restart
@pytest.mark.parametrize("ping", [0, 1])
def test_survives_a_server_restart_between_requests(
    server_target: Any, make: Any, worker: ThreadPoolExecutor, ping: int
) -> None:
    target = server_target
    persist = make(ping=ping)

    def request() -> int:
        db = persist.connection()
        session = backend(target, db)
        rows(target, db, "SELECT 1")
        if target.name != "pg":
            db.commit()
        return session

    before = worker.submit(request).result()
    target.server.restart("fast")
    after = worker.submit(request).result()
    assert after != before
    assert worker.submit(request).result() == after
    assert persist.open_connections == 1


@pytest.mark.parametrize("ping", [0, 1])
def test_survives_a_killed_session_between_requests(
    server_target: Any, make: Any, worker: ThreadPoolExecutor, ping: int
) -> None:
    target = server_target
    persist = make(ping=ping)

    def request() -> int:
        db = persist.connection()
        session = backend(target, db)
        if target.name != "pg":
            db.commit()
        return session

    before = worker.submit(request).result()
    assert target.kill_backend(before)
    after = worker.submit(request).result()
    assert after != before
    assert target.session_count() == 1


# -- fork ---------------------------------------------------------------------------------------


FORK_SCRIPT = """
    import json, os, sys, threading
    from tether.persistent import PersistentDB, PersistentPg

    name, kwargs, sql = json.loads(os.environ["TETHER_TEST_TARGET"])
    if name == "pg":
        persist = PersistentPg(ping=0, **kwargs)
        def backend(db):
            return db.query(sql).getresult()[0][0]
    else:
        import importlib
        persist = PersistentDB(importlib.import_module(name), ping=0, **kwargs)
        def backend(db):
            cur = db.cursor()
            cur.execute(sql)
            value = cur.fetchall()[0][0]
            db.commit()
            return value

    db = persist.connection()
    parent = backend(db)
    ready, go, checked = threading.Event(), threading.Event(), []

    def other():  # another thread's connection: the child inherits it too
        first = backend(persist.connection())
        ready.set()
        go.wait(30)
        checked.append(backend(persist.connection()) == first)

    thread = threading.Thread(target=other)
    thread.start()
    ready.wait()
    pid = os.fork()
    if pid == 0:
        child = backend(persist.connection())
        assert child != parent, (child, parent)
        sys.exit(0)  # a normal exit: atexit, then everything is freed
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert persist.connection() is db
    assert backend(db) == parent  # the parent's sessions survived the child
    go.set()
    thread.join()
    assert checked == [True], checked
    print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_leaves_the_parent_sessions_alone(server_target: Any) -> None:
    target = server_target
    spec = json.dumps([target.name, target.kwargs, target.backend_id_sql])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TETHER_TEST_TARGET": spec},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
