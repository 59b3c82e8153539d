"""The timeouts a chaos run configures, and the bound each operation must fail within.

A pool can only fail fast if the driver does: every blocking call must have a
timeout. :class:`Timeouts` holds the three a run sets (connect, read, checkout)
and turns them into each driver's connect arguments (:meth:`Timeouts.apply`).
:meth:`Timeouts.bound` is what invariant 4 holds a failing operation to: the
longest legitimate path through it (a checkout may wait for a slot, ping an
idle connection and open a new one).

Driver facts behind the arguments (measured, psycopg 3.3 / PyGreSQL 6.2 /
PyMySQL 1.2, libpq 15):

* libpq (psycopg, pgdb, pg) has ``connect_timeout`` (whole seconds, at least
  2) but no read timeout: a query on an established connection waits for
  as long as the socket stays open. On a real network TCP keepalives or
  ``tcp_user_timeout`` end such a wait; behind toxiproxy, which acknowledges
  every packet, nothing does. The blackhole fault therefore closes silent
  connections after ``read`` seconds for libpq drivers (see
  :class:`~tether.harness.chaos.faults.Blackhole`).
* PyGreSQL classic ``pg.DB`` takes no ``connect_timeout`` keyword: it goes into
  the ``dbname`` conninfo string.
* PyMySQL has ``connect_timeout``, ``read_timeout`` and ``write_timeout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PHASES", "Phase", "Timeouts", "libpq_driver"]

#: The steps of one ledger transaction, in order (``rollback`` and ``close`` end it).
Phase = Literal["checkout", "begin", "stmt1", "stmt2", "commit", "rollback", "close"]
PHASES: tuple[Phase, ...] = ("checkout", "begin", "stmt1", "stmt2", "commit", "rollback", "close")

_LIBPQ = frozenset({"psycopg", "pgdb", "pg"})


def libpq_driver(driver: str) -> bool:
    """True for the drivers built on libpq (no client-side read timeout)."""
    return driver in _LIBPQ


def _conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Timeouts:
    """Seconds: ``connect`` (driver connect timeout; libpq rounds up to whole seconds,
    minimum 2), ``read`` (PyMySQL read/write timeout; for libpq drivers the
    network's give-up time, see the module doc), ``checkout`` (the pool's
    checkout timeout, for pools that have one)."""

    connect: float = 2.0
    read: float = 2.0
    checkout: float = 1.5

    def __post_init__(self) -> None:
        for name in ("connect", "read", "checkout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name}: expected seconds > 0, got {value!r}")

    @property
    def libpq_connect(self) -> int:
        """``connect`` as libpq applies it: whole seconds, at least 2."""
        return max(2, math.ceil(self.connect))

    def effective_connect(self, driver: str) -> float:
        """The connect timeout the driver really applies."""
        return float(self.libpq_connect) if libpq_driver(driver) else self.connect

    def apply(self, driver: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` for ``driver``'s connect with these timeouts set (a new dict)."""
        kw = dict(kwargs)
        if driver in ("psycopg", "pgdb"):
            kw["connect_timeout"] = self.libpq_connect
        elif driver == "pg":
            dbname = str(kw.get("dbname", ""))
            if "=" not in dbname:
                dbname = f"dbname={_conninfo_quote(dbname)}" if dbname else ""
            kw["dbname"] = f"{dbname} connect_timeout={self.libpq_connect}".strip()
        elif driver == "pymysql":
            kw["connect_timeout"] = self.connect
            kw["read_timeout"] = self.read
            kw["write_timeout"] = self.read
        return kw

    def bound(self, phase: str, driver: str, *, checkout_timeout: float | None) -> float:
        """The longest a failing ``phase`` may legitimately take, in seconds.

        ``checkout``: the pool's checkout timeout (if it has one) plus a ping
        (``read``) plus a connect. ``begin`` and a statement: a ping or the
        statement (``read``) plus a reopen (``connect``; steady connections
        reopen a lost connection outside transactions). ``commit``,
        ``rollback``, ``close``: one round trip (``read``).
        """
        connect = self.effective_connect(driver)
        if phase == "checkout":
            return (checkout_timeout or 0.0) + self.read + connect
        if phase in ("begin", "stmt1", "stmt2"):
            return self.read + connect
        return self.read
