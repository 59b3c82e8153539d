"""The ledger workload: threads writing uniquely keyed row pairs, one transaction each.

Each worker thread loops until told to stop: check a connection out of the
pool, ``begin()``, insert row ``key`` and row ``key + "b"`` in two statements
(optionally pausing between them, so faults hit open transactions),
``commit()``, give the connection back. Each row records the server session
that wrote it (``pg_backend_pid()`` / ``CONNECTION_ID()``), computed by the
server inside the INSERT itself. The client records every transaction's
outcome in a :class:`TxnRecord`:

``ok``        ``commit()`` returned: the commit was acknowledged
``failed``    something before ``commit()`` raised: nothing may be committed
``unknown``   ``commit()`` raised: it may or may not have been committed
``in_flight`` the worker never finished it (the run's deadline passed)

After the run, :mod:`tether.harness.chaos.invariants` compares those records
with the rows in the table. The table has no unique key, so a row written
twice shows up as two rows instead of an error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..servers import DatabaseServer
from .pools import PoolHandle

__all__ = [
    "LedgerOps",
    "LedgerRow",
    "LedgerTable",
    "LedgerWorkload",
    "Outcome",
    "TxnRecord",
    "WorkerState",
]

log = logging.getLogger("tether.harness.chaos")

Outcome = Literal["ok", "failed", "unknown", "in_flight"]

#: Seconds a worker pauses after a failed transaction, so a pool that fails
#: instantly does not spin a core (and the record list) while the database is away.
FAILURE_PAUSE = 0.01


@dataclass
class TxnRecord:
    """One transaction attempt as the client saw it. Times are ``time.monotonic()``."""

    key: str
    worker: int
    seq: int
    started: float
    ended: float | None = None
    outcome: Outcome = "in_flight"
    #: The step that raised (``checkout``, ``begin``, ``stmt1``, ``stmt2``, ``commit``), or "".
    phase: str = ""
    error_type: str = ""
    error: str = ""
    #: How long the step that raised took, in seconds.
    op_elapsed: float = 0.0
    #: The slowest step that succeeded, and how long it took: a wait that outlived
    #: its timeout and then went on is as much a broken promise as a late failure.
    slowest_phase: str = ""
    slowest_elapsed: float = 0.0

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "key": self.key,
            "worker": self.worker,
            "outcome": self.outcome,
            "phase": self.phase,
            "error_type": self.error_type,
            "error": self.error,
            "started": round(self.started - t0, 4),
            "ended": None if self.ended is None else round(self.ended - t0, 4),
            "op_elapsed": round(self.op_elapsed, 4),
            "slowest_phase": self.slowest_phase,
            "slowest_elapsed": round(self.slowest_elapsed, 4),
        }


@dataclass(frozen=True)
class LedgerRow:
    """A row found in the table after the run."""

    key: str
    backend: int


@dataclass
class WorkerState:
    """What a worker is doing right now (read by the runner to describe a hang)."""

    index: int
    phase: str = "idle"
    op_started: float = 0.0
    key: str = ""
    done: bool = False
    #: An exception that escaped the worker loop itself (a harness bug), if any.
    crash: BaseException | None = None


class LedgerOps:
    """The SQL of the workload in one driver's dialect, and how to run it."""

    def __init__(self, driver: str, kind: str, table: str) -> None:
        self.driver = driver
        self.kind = kind
        self.table = table
        backend = "pg_backend_pid()" if kind == "postgresql" else "CONNECTION_ID()"
        values = f"$1, {backend}, $2, $3" if driver == "pg" else f"%s, {backend}, %s, %s"
        self.insert_sql = f"INSERT INTO {table} (k, backend, worker, seq) VALUES ({values})"

    def begin(self, conn: Any) -> None:
        conn.begin()

    def insert(self, conn: Any, key: str, worker: int, seq: int) -> None:
        if self.driver == "pg":
            conn.query(self.insert_sql, [key, worker, seq])
            return
        cursor = conn.cursor()
        try:
            cursor.execute(self.insert_sql, (key, worker, seq))
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()


class LedgerTable:
    """The ledger table ``name`` on ``server``: created, read and dropped as the admin."""

    def __init__(self, server: DatabaseServer, name: str) -> None:
        self.server = server
        self.name = name

    def create(self) -> None:
        if self.server.kind == "postgresql":
            self.server.admin_execute(
                f"CREATE TABLE {self.name} (k varchar(80) NOT NULL, backend bigint NOT NULL,"
                " worker int NOT NULL, seq int NOT NULL)"
            )
            self.server.admin_execute(f"CREATE INDEX ON {self.name} (k)")
        else:
            self.server.admin_execute(
                f"CREATE TABLE {self.name} (k varchar(80) NOT NULL, backend bigint NOT NULL,"
                " worker int NOT NULL, seq int NOT NULL, KEY (k)) ENGINE=InnoDB"
            )

    def rows(self) -> list[LedgerRow]:
        result = self.server.admin_execute(f"SELECT k, backend FROM {self.name}")
        return [LedgerRow(str(k), int(b)) for k, b in result]


class LedgerWorkload:
    """``workers`` threads running ledger transactions through ``pool`` until :meth:`stop`."""

    def __init__(
        self,
        pool: PoolHandle,
        ops: LedgerOps,
        *,
        workers: int = 4,
        think_time: float = 0.005,
        key_prefix: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: expected >= 1, got {workers!r}")
        self.pool = pool
        self.ops = ops
        self.workers = workers
        self.think_time = think_time
        self.key_prefix = key_prefix or uuid.uuid4().hex[:6]
        self.records: list[TxnRecord] = []
        self.states = [WorkerState(i) for i in range(workers)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for state in self.states:
            thread = threading.Thread(
                target=self._run_worker,
                args=(state,),
                name=f"chaos-worker-{state.index}",
                daemon=True,  # a hung worker must not keep the test process alive
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Ask every worker to start no new transaction."""
        self._stop.set()

    def join(self, deadline: float) -> list[WorkerState]:
        """Wait for the workers until ``deadline`` (monotonic); return those still running."""
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [s for s, t in zip(self.states, self._threads) if t.is_alive()]

    def alive(self) -> list[WorkerState]:
        return [s for s, t in zip(self.states, self._threads) if t.is_alive()]

    # -- one worker ----------------------------------------------------------------------

    def _run_worker(self, state: WorkerState) -> None:
        try:
            seq = 0
            while not self._stop.is_set():
                seq += 1
                record = self._transaction(state, seq)
                if record.outcome != "ok":
                    time.sleep(FAILURE_PAUSE)
        except BaseException as exc:  # a bug in the harness, not in the pool
            state.crash = exc
            log.exception("chaos worker %d crashed", state.index)
        finally:
            state.phase = "done"
            state.done = True

    def _enter(self, state: WorkerState, phase: str) -> float:
        now = time.monotonic()
        state.phase = phase
        state.op_started = now
        return now

    def _transaction(self, state: WorkerState, seq: int) -> TxnRecord:
        worker = state.index
        key = f"{self.key_prefix}w{worker}s{seq}"
        record = TxnRecord(key, worker, seq, time.monotonic())
        state.key = key
        self.records.append(record)
        ops = self.ops
        phase = "checkout"
        op_start = self._enter(state, phase)
        conn: Any = None

        def step(next_phase: str) -> None:
            """The current step succeeded: note its time, start ``next_phase``."""
            nonlocal phase, op_start
            elapsed = time.monotonic() - op_start
            if elapsed > record.slowest_elapsed:
                record.slowest_elapsed, record.slowest_phase = elapsed, phase
            phase = next_phase
            op_start = self._enter(state, next_phase)

        try:
            conn = self.pool.connection()
            step("begin")
            ops.begin(conn)
            step("stmt1")
            ops.insert(conn, key, worker, seq)
            step("stmt2")
            if self.think_time > 0:  # the client's own time: not the statement's
                time.sleep(self.think_time)
                op_start = self._enter(state, phase)
            ops.insert(conn, key + "b", worker, seq)
            step("commit")
            ops.commit(conn)
        except Exception as exc:
            now = time.monotonic()
            record.op_elapsed = now - op_start
            record.phase = phase
            record.error_type = type(exc).__name__
            record.error = " ".join(str(exc).split())[:300]
            record.outcome = "unknown" if phase == "commit" else "failed"
            if conn is not None and phase != "commit":
                self._enter(state, "rollback")
                with contextlib.suppress(Exception):
                    ops.rollback(conn)
        else:
            elapsed = time.monotonic() - op_start
            if elapsed > record.slowest_elapsed:
                record.slowest_elapsed, record.slowest_phase = elapsed, phase
            record.outcome = "ok"
        finally:
            record.ended = time.monotonic()
            if conn is not None:
                self._enter(state, "close")
                with contextlib.suppress(Exception):
                    conn.close()
            state.phase = "idle"
        return record


def outcome_counts(records: Sequence[TxnRecord]) -> dict[str, int]:
    """How many records have each outcome."""
    counts = {"ok": 0, "failed": 0, "unknown": 0, "in_flight": 0}
    for record in records:
        counts[record.outcome] += 1
    return counts
