"""tether.persistent with sqlite3: thread affinity, transactions, thread death, the cap.

No server needed: every test gets its own database file. sqlite3 connections
are opened with ``check_same_thread`` on (the default), so a connection used
or closed by any thread but its own raises, and a wrong-thread close shows
up as a connection left open.
"""

from __future__ import annotations

import _threading_local
import gc
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tether.persistent
from tether.persistent import (
    NotSupportedError,
    PersistentDB,
    PersistentDBError,
    TooManyConnectionsError,
)
from tether.persistent import core as persistent_core
from tether.simple_pool import PoolClosed, PoolError, PoolTimeout
from tether.steady import SteadyDBConnection


class TrackedConnection(sqlite3.Connection):
    """A sqlite3 connection that remembers which thread opened and closed it."""

    opened_in: int
    closed_in: int | None = None

    def close(self) -> None:
        super().close()  # raises ProgrammingError in a thread that is not the owner
        self.closed_in = threading.get_ident()


class Recorder:
    """A creator function (``recorder.connect``) that keeps every connection it opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[TrackedConnection] = []
        self.lock = threading.Lock()

    def connect(self, **kwargs: Any) -> TrackedConnection:
        con = sqlite3.connect(str(self.path), factory=TrackedConnection, **kwargs)
        assert isinstance(con, TrackedConnection)
        con.opened_in = threading.get_ident()
        with self.lock:
            self.opened.append(con)
        return con

    def still_open(self) -> list[TrackedConnection]:
        return [con for con in self.opened if con.closed_in is None]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "test.sqlite3"
    con = sqlite3.connect(str(db))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    return db


@pytest.fixture
def recorder(path: Path) -> Recorder:
    return Recorder(path)


@pytest.fixture
def generators() -> Iterator[list[Any]]:
    """Generators made by a test, closed after it."""
    made: list[Any] = []
    yield made
    for persist in made:
        persist.close()


@pytest.fixture
def make(recorder: Recorder, generators: list[Any]) -> Any:
    def make(*args: Any, **kwargs: Any) -> PersistentDB:
        kwargs.setdefault("ping", 0)
        persist = PersistentDB(recorder.connect, *args, **kwargs)
        generators.append(persist)
        return persist

    return make


def count_rows(path: Path) -> int:
    con = sqlite3.connect(str(path))
    try:
        return int(con.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        con.close()


def in_thread(function: Any, *args: Any) -> Any:
    """Run ``function(*args)`` in a new thread that then ends; return its result or raise."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function(*args))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- interface --------------------------------------------------------------------------------


def test_exports_dbutils_names_and_version() -> None:
    assert tether.persistent.__version__ == "0.1.0"
    assert PersistentDB.version == tether.persistent.__version__
    assert issubclass(NotSupportedError, PersistentDBError)
    assert PersistentDBError is PoolError
    assert issubclass(TooManyConnectionsError, PersistentDBError)
    assert set(tether.persistent.__all__) >= {
        "PersistentDB",
        "PersistentPg",
        "PersistentDBError",
        "NotSupportedError",
        "__version__",
    }


def test_dbutils_positional_order(path: Path, generators: list[Any]) -> None:
    # creator, maxusage, setsession, failures, ping, closeable, threadlocal, isfatal, *args
    persist = PersistentDB(
        sqlite3, 10, ["PRAGMA foreign_keys = ON"], None, 0, False, None, None, str(path)
    )
    generators.append(persist)
    db = persist.connection()
    assert isinstance(db, SteadyDBConnection)
    cur = db.cursor()
    cur.execute("PRAGMA foreign_keys")
    assert cur.fetchone() == (1,)
    assert persist.dedicated_connection() is db
    assert persist.connection(shareable=True) is db


def test_steady_connection_is_not_persistent(make: Any, recorder: Recorder) -> None:
    persist = make(closeable=True)
    db = persist.connection()
    steady = persist.steady_connection()
    assert isinstance(steady, SteadyDBConnection)
    assert steady is not db
    assert persist.open_connections == 1  # not counted
    steady.close()  # closeable, as configured
    assert recorder.opened[1].closed_in is not None
    assert persist.connection() is db


def test_repr_hides_connect_arguments(path: Path, generators: list[Any]) -> None:
    persist = PersistentDB(sqlite3, ping=0, database=str(path), maxconnections=3)
    generators.append(persist)
    persist.connection()
    text = repr(persist)
    assert str(path) not in text
    assert "1/3 open" in text
    persist.close()
    assert "closed" in repr(persist)


# -- thread affinity ----------------------------------------------------------------------------


def test_same_connection_within_a_thread_another_in_each_thread(
    make: Any, recorder: Recorder
) -> None:
    persist = make()
    first = persist.connection()
    assert persist.connection() is first
    barrier = threading.Barrier(4)

    def request() -> tuple[int, int]:
        db = persist.connection()
        barrier.wait()  # all four threads hold their connection at once
        assert persist.connection() is db
        cur = db.cursor()
        cur.execute("SELECT 1")  # sqlite3 raises if this is another thread's connection
        raw = db.dbapi_connection
        return id(db), raw.opened_in

    results: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda: results.append(request())) for _ in range(3)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert len({identity for identity, _ in results} | {id(first)}) == 4
    assert len({owner for _, owner in results}) == 3
    assert len(recorder.opened) == 4


def test_hot_path_makes_no_round_trip_with_ping_0(make: Any) -> None:
    statements: list[str] = []
    persist = make(on_connect=lambda raw: raw.set_trace_callback(statements.append))
    db = persist.connection()
    for _ in range(100):
        assert persist.connection() is db
    assert statements == []


def test_ping_1_checks_at_every_request_with_ping_after_0(make: Any) -> None:
    checks: list[Any] = []

    def check(raw: Any) -> bool:
        checks.append(raw)
        return True

    persist = make(ping=(1, check), ping_after=0)
    db = persist.connection()
    persist.connection()
    persist.connection()
    assert len(checks) >= 2
    assert all(raw is db.dbapi_connection for raw in checks)


def test_ping_1_checks_only_after_the_connection_sat_unused(make: Any) -> None:
    checks: list[Any] = []
    persist = make(ping=(1, lambda raw: checks.append(raw)), ping_after=0.05)
    persist.connection()
    checks.clear()
    for _ in range(10):
        persist.connection()  # a busy thread: no round trip
    assert checks == []
    time.sleep(0.06)
    persist.connection()  # unused for longer than ping_after: checked once
    assert len(checks) == 1


@pytest.mark.parametrize("value", [-1, float("inf"), "1"])
def test_bad_ping_after_names_the_parameter(make: Any, value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="ping_after"):
        make(ping_after=value)


def test_failed_ping_reopens_outside_transactions(make: Any, recorder: Recorder) -> None:
    alive = [True]
    persist = make(ping=(1, lambda raw: alive[0]), ping_after=0)
    db = persist.connection()
    first_raw = db.dbapi_connection
    alive[0] = False
    assert persist.connection() is db
    assert db.dbapi_connection is not first_raw
    assert len(recorder.opened) == 2


# -- close() and closeable ----------------------------------------------------------------------


def test_close_is_ignored_unless_closeable(make: Any, recorder: Recorder) -> None:
    persist = make()
    db = persist.connection()
    db.close()
    assert recorder.still_open() == recorder.opened
    assert persist.connection() is db
    db.cursor().execute("SELECT 1")
    assert persist.open_connections == 1


def test_closeable_close_really_closes(make: Any, recorder: Recorder) -> None:
    persist = make(closeable=True)
    db = persist.connection()
    db.close()
    assert recorder.still_open() == []
    assert persist.open_connections == 0
    again = persist.connection()
    assert again is not db
    again.cursor().execute("SELECT 1")
    assert len(recorder.opened) == 2
    assert persist.open_connections == 1


def test_close_rolls_back_an_open_transaction(make: Any, path: Path) -> None:
    persist = make()
    db = persist.connection()
    db.begin()
    db.cursor().execute("INSERT INTO t VALUES (1)")
    db.close()
    assert not db.transaction_open()
    assert count_rows(path) == 0
    # and the implicit kind: a statement without commit
    db.cursor().execute("INSERT INTO t VALUES (2)")
    db.close()
    assert not db.transaction_open()
    assert count_rows(path) == 0


def test_context_manager_commits_or_rolls_back(make: Any, path: Path) -> None:
    persist = make()
    with persist.connection() as db:
        db.cursor().execute("INSERT INTO t VALUES (1)")
    assert count_rows(path) == 1
    with pytest.raises(ZeroDivisionError), persist.connection() as db:
        db.cursor().execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert count_rows(path) == 1
    assert persist.connection() is db  # the connection stays the thread's


# -- transactions left open ---------------------------------------------------------------------


def test_abandoned_implicit_transaction_is_rolled_back_before_reuse(
    make: Any, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    persist = make()

    def forgetful_request() -> None:
        db = persist.connection()
        db.cursor().execute("INSERT INTO t VALUES (1)")  # no commit, no close

    forgetful_request()
    with caplog.at_level(logging.WARNING, "tether.persistent"):
        db = persist.connection()
    assert not db.transaction_open()
    assert "left open" in caplog.text
    db.cursor().execute("INSERT INTO t VALUES (2)")
    db.commit()
    assert count_rows(path) == 1  # the forgotten row was not committed with the next request


def test_abandoned_begin_is_rolled_back_before_reuse(make: Any, path: Path) -> None:
    persist = make()

    def forgetful_request() -> None:
        db = persist.connection()
        db.begin()
        cur = db.cursor()
        cur.execute("INSERT INTO t VALUES (1)")
        cur.close()

    forgetful_request()
    db = persist.connection()
    assert not db.transaction_open()
    db.commit()
    assert count_rows(path) == 0


def test_abandoned_cursor_chain_is_rolled_back(make: Any, path: Path) -> None:
    persist = make()

    def request() -> None:
        persist.connection().cursor().execute("INSERT INTO t VALUES (1)")

    request()
    persist.connection().commit()
    assert count_rows(path) == 0


def test_nested_connection_calls_keep_the_transaction(make: Any, path: Path) -> None:
    persist = make()

    def helper() -> None:
        persist.connection().cursor().execute("INSERT INTO t VALUES (2)")

    db = persist.connection()
    db.cursor().execute("INSERT INTO t VALUES (1)")
    helper()  # asks for the connection while the request still holds it
    assert db.transaction_open()
    db.commit()
    assert count_rows(path) == 2


def test_a_live_cursor_keeps_the_transaction(make: Any, path: Path) -> None:
    persist = make()
    cur = persist.connection().cursor()
    cur.execute("INSERT INTO t VALUES (1)")
    persist.connection()  # `cur` still refers to the connection: the request is not over
    cur.execute("INSERT INTO t VALUES (2)")
    persist.connection().commit()
    assert count_rows(path) == 2


# -- thread death -------------------------------------------------------------------------------


def test_connection_is_closed_by_its_thread_when_the_thread_ends(
    make: Any, recorder: Recorder
) -> None:
    persist = make()

    def request() -> int:
        persist.connection().cursor().execute("SELECT 1")
        return threading.get_ident()

    ident = in_thread(request)
    [con] = recorder.opened
    assert con.opened_in == ident
    assert con.closed_in == ident  # closed in the ending thread itself
    assert persist.open_connections == 0


def test_thread_ending_inside_a_transaction_leaves_nothing_behind(
    make: Any, recorder: Recorder, path: Path
) -> None:
    persist = make()

    def request() -> None:
        db = persist.connection()
        db.begin()
        db.cursor().execute("INSERT INTO t VALUES (1)")

    in_thread(request)
    assert recorder.still_open() == []
    assert count_rows(path) == 0
    # the database is not locked by a leftover transaction
    con = sqlite3.connect(str(path), timeout=0.1)
    con.execute("INSERT INTO t VALUES (2)")
    con.commit()
    con.close()


def test_no_per_thread_leak_after_1000_short_threads(make: Any, recorder: Recorder) -> None:
    persist = make()
    persist.connection()  # the main thread's, which stays
    gc.collect()
    threads_before = len(threading.enumerate())
    dummies_before = len(threading._active)  # type: ignore[attr-defined]
    slots_before = sum(isinstance(o, persistent_core._Slot) for o in gc.get_objects())

    def request() -> None:
        db = persist.connection()
        db.cursor().execute("SELECT 1")
        db.commit()

    for _ in range(1000):
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()
    assert len(recorder.opened) == 1001
    assert len(recorder.still_open()) == 1
    assert persist.open_connections == 1
    assert len(persist._shared.slots) == 1
    gc.collect()
    # nothing grew: no slots, no thread objects (a log record written while a thread
    # ends would leave a threading._DummyThread behind for each thread)
    assert sum(isinstance(o, persistent_core._Slot) for o in gc.get_objects()) <= slots_before
    assert len(threading.enumerate()) <= threads_before
    assert len(threading._active) <= dummies_before  # type: ignore[attr-defined]


def test_a_connection_in_use_outlives_its_dropped_generator(recorder: Recorder) -> None:
    """``PersistentDB(creator).connection()`` on one line (found by an outside attack:
    the generator's collection closed the connection its caller still held)."""
    db = PersistentDB(recorder.connect, ping=0).connection()
    gc.collect()
    cur = db.cursor()
    cur.execute("INSERT INTO t VALUES (1)")
    db.commit()
    assert count_rows(recorder.path) == 1
    assert len(recorder.still_open()) == 1
    del cur, db
    gc.collect()
    assert recorder.still_open() == []  # closed once its last user let go of it


def test_custom_threadlocal_class(make: Any, recorder: Recorder) -> None:
    persist = make(threadlocal=_threading_local.local)
    db = persist.connection()
    assert persist.connection() is db
    other = in_thread(lambda: id(persist.connection()))
    assert other != id(db)
    # _threading_local frees a thread's data with its Thread object (gone now), but
    # its `local` still points at the data of the thread that used it last, until
    # another thread uses it.
    assert persist.connection() is db
    wait_for(lambda: persist.open_connections == 1)


# -- the cap ------------------------------------------------------------------------------------


class Holders:
    """Threads that each take a connection and keep it until released."""

    def __init__(self, persist: PersistentDB, count: int) -> None:
        self.release = threading.Event()
        self.ready = threading.Barrier(count + 1)
        self.threads = [threading.Thread(target=self.hold, args=(persist,)) for _ in range(count)]
        for thread in self.threads:
            thread.start()
        self.ready.wait(timeout=5)

    def hold(self, persist: PersistentDB) -> None:
        persist.connection()
        self.ready.wait(timeout=5)
        self.release.wait(timeout=10)

    def end_all(self) -> None:
        """Let the holders end, and wait until they have."""
        self.release.set()
        for thread in self.threads:
            thread.join()


def test_cap_raises_when_not_blocking(make: Any) -> None:
    persist = make(maxconnections=2)
    holders = Holders(persist, 2)
    try:
        started = time.monotonic()
        with pytest.raises(TooManyConnectionsError, match="maxconnections"):
            persist.connection()
        assert time.monotonic() - started < 1
        assert persist.open_connections == 2
    finally:
        holders.end_all()
    assert persist.open_connections == 0
    persist.connection()  # room again, now that the holders ended


def test_cap_wait_times_out(make: Any) -> None:
    persist = make(maxconnections=1, blocking=True, checkout_timeout=0.3)
    holders = Holders(persist, 1)
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="checkout_timeout"):
            persist.connection()
        assert 0.25 < time.monotonic() - started < 3
    finally:
        holders.end_all()


def test_cap_wait_succeeds_when_a_thread_ends(make: Any) -> None:
    persist = make(maxconnections=1, blocking=True, checkout_timeout=10)
    holders = Holders(persist, 1)
    threading.Timer(0.2, holders.release.set).start()
    started = time.monotonic()
    db = persist.connection()
    assert 0.15 < time.monotonic() - started < 5
    db.cursor().execute("SELECT 1")
    holders.end_all()
    assert persist.open_connections == 1


def test_cap_counts_closeable_close(make: Any) -> None:
    persist = make(maxconnections=1, blocking=True, checkout_timeout=10, closeable=True)
    holder_done = threading.Event()
    got = threading.Event()

    def holder() -> None:
        db = persist.connection()
        got.set()
        time.sleep(0.2)
        db.close()  # frees the place without the thread ending
        holder_done.wait(timeout=10)

    thread = threading.Thread(target=holder)
    thread.start()
    got.wait(timeout=5)
    persist.connection()
    holder_done.set()
    thread.join()


def test_failed_connect_gives_its_place_back(make: Any, tmp_path: Path) -> None:
    calls = [0]

    def creator() -> sqlite3.Connection:
        calls[0] += 1
        if calls[0] == 1:
            raise sqlite3.OperationalError("unable to open database")
        return sqlite3.connect(str(tmp_path / "x.db"))

    persist = PersistentDB(creator, ping=0, maxconnections=1)
    with pytest.raises(sqlite3.OperationalError):
        persist.connection()
    assert persist.open_connections == 0
    persist.connection()
    persist.close()


# -- closing the generator ----------------------------------------------------------------------


def test_generator_close_closes_idle_connections_of_live_threads(
    make: Any, recorder: Recorder
) -> None:
    persist = make()
    persist.connection()
    in_use = threading.Event()
    idle = threading.Event()
    done = threading.Event()
    outcome: list[Any] = []

    def idle_thread() -> None:
        persist.connection().cursor().execute("SELECT 1")
        idle.set()
        done.wait(timeout=10)

    def busy_thread() -> None:
        db = persist.connection()  # held across close()
        in_use.set()
        done.wait(timeout=10)
        db.cursor().execute("SELECT 1")  # still usable: close() did not touch it
        try:
            persist.connection()
        except PoolClosed as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=idle_thread), threading.Thread(target=busy_thread)]
    for thread in threads:
        thread.start()
    idle.wait(timeout=5)
    in_use.wait(timeout=5)
    persist.close()
    # the main thread's and the idle thread's are closed, the busy one's is not
    # (the idle one was closed from here: sqlite3 refuses that, so it is
    # dropped instead; the raw connection closes when freed)
    assert persist.open_connections == 1
    done.set()
    for thread in threads:
        thread.join()
    assert len(outcome) == 1
    assert persist.open_connections == 0
    with pytest.raises(PoolClosed):
        persist.connection()


def test_generator_as_context_manager(recorder: Recorder) -> None:
    with PersistentDB(recorder.connect, ping=0) as persist:
        persist.connection().cursor().execute("SELECT 1")
    assert recorder.still_open() == []
    with pytest.raises(PoolClosed):
        persist.connection()


def test_close_wakes_threads_waiting_for_the_cap(make: Any) -> None:
    persist = make(maxconnections=1, blocking=True, checkout_timeout=10)
    holders = Holders(persist, 1)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            persist.connection()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    persist.close()
    thread.join(timeout=5)
    assert time.monotonic() - started < 3
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    holders.end_all()


# -- options passed to the steady layer ---------------------------------------------------------


def test_maxusage_on_connect_max_lifetime_logger(make: Any) -> None:
    opened: list[Any] = []
    logger = logging.getLogger("test.persistent.passthrough")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        persist = make(maxusage=2, on_connect=opened.append, max_lifetime=0.2, logger=logger)
        db = persist.connection()
        cur = db.cursor()
        for _ in range(3):
            cur.execute("SELECT 1")
        assert len(opened) == 2  # maxusage reached after 2 statements
        time.sleep(0.25)
        persist.connection().cursor().execute("SELECT 1")
        assert len(opened) == 3  # max_lifetime reached
        assert any("max_lifetime" in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)


def test_setsession_runs_on_each_new_connection(make: Any) -> None:
    persist = make(setsession=["PRAGMA foreign_keys = ON"])
    cur = persist.connection().cursor()
    cur.execute("PRAGMA foreign_keys")
    assert cur.fetchone() == (1,)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"maxusage": "10"}, TypeError, "maxusage"),
        ({"maxusage": -1}, ValueError, "maxusage"),
        ({"setsession": "PRAGMA foreign_keys = ON"}, TypeError, "setsession"),
        ({"setsession": [1]}, TypeError, "setsession"),
        ({"failures": 42}, TypeError, "failures"),
        ({"ping": 9}, ValueError, "ping"),
        ({"ping": 1.5}, TypeError, "ping"),
        ({"isfatal": True}, TypeError, "isfatal"),
        ({"threadlocal": 3}, TypeError, "threadlocal"),
        ({"maxconnections": -1}, ValueError, "maxconnections"),
        ({"maxconnections": "4"}, TypeError, "maxconnections"),
        ({"blocking": "yes"}, TypeError, "blocking"),
        ({"checkout_timeout": 0}, ValueError, "checkout_timeout"),
        ({"checkout_timeout": None}, TypeError, "checkout_timeout"),
        ({"checkout_timeout": float("inf")}, ValueError, "checkout_timeout"),
        ({"max_lifetime": -5}, ValueError, "max_lifetime"),
        ({"on_connect": "x"}, TypeError, "on_connect"),
        ({"logger": "tether"}, TypeError, "logger"),
        ({"driver": "nosuchdriver"}, ValueError, "driver"),
        ({"driver": 3}, TypeError, "driver"),
    ],
)
def test_bad_input_names_the_parameter(
    path: Path, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=rf"^{name}\b"):
        PersistentDB(sqlite3, database=str(path), **kwargs)


def test_bad_creator_names_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"^creator\b"):
        PersistentDB(42)  # type: ignore[arg-type]


def test_threadsafety_0_is_not_supported() -> None:
    import types

    module = types.ModuleType("unsafe_db")
    module.threadsafety = 0  # type: ignore[attr-defined]
    module.connect = lambda: None  # type: ignore[attr-defined]
    with pytest.raises(NotSupportedError, match="threadsafety"):
        PersistentDB(module)


# -- fork and exit ------------------------------------------------------------------------------


def run_script(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(path: Path) -> None:
    out = run_script(
        """
        import os, sqlite3, sys, threading
        from tether.persistent import PersistentDB

        opened = []
        persist = PersistentDB(sqlite3, ping=0, database=sys.argv[1], check_same_thread=False,
                               on_connect=lambda raw: opened.append(os.getpid()))
        db = persist.connection()
        ready = threading.Event()

        def other():  # a second thread with a connection, which the child does not inherit
            persist.connection()
            ready.set()
            threading.Event().wait(5)

        threading.Thread(target=other, daemon=True).start()
        ready.wait()
        pid = os.fork()
        if pid == 0:
            child = persist.connection()
            assert child is not db
            assert opened[-1] == os.getpid(), opened
            assert persist.open_connections == 1, persist.open_connections
            child.cursor().execute("INSERT INTO t VALUES (1)")
            child.commit()
            sys.exit(0)  # a normal exit: atexit, finalization
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert persist.connection() is db
        db.cursor().execute("INSERT INTO t VALUES (2)")
        db.commit()
        assert persist.open_connections == 2
        print("ok")
        """,
        str(path),
    )
    assert out.strip() == "ok"
    assert count_rows(path) == 2


def test_interpreter_exit_closes_connections_not_in_use(tmp_path: Path) -> None:
    out = run_script(
        """
        import sqlite3, sys, threading
        from tether.persistent import PersistentDB

        class Loud(sqlite3.Connection):
            def close(self):
                print("closed", self.name, flush=True)
                super().close()

        def creator(name):
            con = sqlite3.connect(sys.argv[1], factory=Loud, check_same_thread=False)
            con.name = name
            return con

        main = PersistentDB(creator, ping=0, name="main")
        main.connection()
        idle = PersistentDB(creator, ping=0, name="daemon")
        ready = threading.Event()

        def daemon():
            idle.connection()  # taken, then idle: no request uses it
            ready.set()
            threading.Event().wait()

        threading.Thread(target=daemon, daemon=True).start()
        ready.wait()
        """,
        str(tmp_path / "exit.db"),
    )
    assert sorted(out.split("\n")[:2]) == ["closed daemon", "closed main"]
