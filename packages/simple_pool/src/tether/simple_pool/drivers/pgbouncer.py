"""Driver adapters for running behind PgBouncer, one preset per pool mode.

PgBouncer's pool mode decides what a client's connection is on the server:

* **session** mode: one server session per client connection, for its whole
  life. Everything works as with PostgreSQL itself, ``reset_session=True``
  (``DISCARD ALL`` on return) included; PgBouncer runs its own
  ``server_reset_query`` only when the client disconnects.
* **transaction** mode: a server session only for the length of one
  transaction; the next may run on another. State that must outlive a
  transaction breaks: psycopg's *automatic* prepared statements (it
  prepares any statement it ran ``prepare_threshold`` = 5 times, as
  ``_pg3_N``) are then missing or clash on the other session
  (``InvalidSqlStatementName``, ``DuplicatePreparedStatement``,
  ``ProtocolViolation: bind message supplies 1 parameters, but prepared
  statement "_pg3_2" requires 0``, measured with PgBouncer 1.18: roughly half
  of the requests of 8 threads failed). ``DISCARD ALL`` from a client resets
  whichever server session PgBouncer lent for that one statement, not the
  ones the client's earlier transactions ran on.

:func:`behind_pgbouncer` returns the adapter class for a driver and a mode,
for the pools' ``driver=`` argument::

    PooledDB(psycopg, driver=behind_pgbouncer("transaction"), host=..., port=6432)

In transaction mode the preset turns psycopg's automatic prepared statements
off on every connection it opens (``prepare_threshold = None``, also when
the creator is your own function; a borrower who turns them on again gets
them turned off at the next checkout), and makes ``reset_session`` a
rollback only, logging once that it does not reset anything there. PyGreSQL
(``pgdb``, ``pg``) never prepares statements on its own, so only the reset
changes for it. In session mode the presets behave as the plain adapters.

Without the preset, psycopg's adapter recognises those failures by their
SQLSTATE and message, does not take them for a lost connection, and adds a
note saying what to set to the error (and logs it once).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from .base import DriverAdapter
from .pg import PgClassicAdapter
from .pgdb import PgdbAdapter
from .psycopg import PsycopgAdapter

__all__ = ["POOL_MODES", "PgBouncerPoolMode", "behind_pgbouncer"]

log = logging.getLogger("tether.drivers")

PgBouncerPoolMode = Literal["transaction", "session"]
#: The PgBouncer pool modes tether supports (``statement`` mode forbids transactions).
POOL_MODES: tuple[str, ...] = ("transaction", "session")

_BASES: dict[str, type[DriverAdapter]] = {
    "psycopg": PsycopgAdapter,
    "pgdb": PgdbAdapter,
    "pg": PgClassicAdapter,
}


class _TransactionMode(DriverAdapter):
    """Behind PgBouncer in transaction mode: nothing that must outlive a transaction."""

    pgbouncer_pool_mode: ClassVar[str] = "transaction"
    _reset_warned = False

    def reset_session(self, conn: Any) -> None:
        """Roll back only: a ``DISCARD ALL`` would reset some other server session."""
        if self.in_transaction(conn) is not False:
            self.rollback(conn)
        if not self._reset_warned:
            self._reset_warned = True
            log.warning(
                "%s behind PgBouncer in transaction mode: reset_session=True only rolls back."
                " Each transaction may run on another server session, so DISCARD ALL from the"
                " client cannot reset the sessions this connection used; keep session state"
                " out of transaction mode (SET LOCAL inside the transaction, ALTER ROLE ... SET"
                " for defaults) and drop reset_session, or use PgBouncer's session mode",
                self.name,
            )

    def reset_session_within(self, conn: Any, timeout: float) -> bool | None:
        """None: the reset is :meth:`reset_session`'s rollback only (no ``DISCARD ALL``)."""
        return None


class _SessionMode(DriverAdapter):
    """Behind PgBouncer in session mode: every feature works, as on PostgreSQL."""

    pgbouncer_pool_mode: ClassVar[str] = "session"


class PsycopgTransactionModeAdapter(_TransactionMode, PsycopgAdapter):
    """psycopg behind PgBouncer in transaction mode: no automatic prepared statements."""

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        conn = super().connect(*args, **kwargs)
        # Set on the connection, not passed to connect: a creator of the user's own
        # (lambda: psycopg.connect(dsn)) takes no keywords. Restored at every checkout.
        conn.prepare_threshold = None
        return conn


class PgdbTransactionModeAdapter(_TransactionMode, PgdbAdapter):
    """PyGreSQL ``pgdb`` behind PgBouncer in transaction mode (no DISCARD ALL on reset)."""


class PgTransactionModeAdapter(_TransactionMode, PgClassicAdapter):
    """PyGreSQL classic ``pg`` behind PgBouncer in transaction mode (no DISCARD ALL on reset)."""


class PsycopgSessionModeAdapter(_SessionMode, PsycopgAdapter):
    """psycopg behind PgBouncer in session mode: the plain adapter's behaviour."""


class PgdbSessionModeAdapter(_SessionMode, PgdbAdapter):
    """PyGreSQL ``pgdb`` behind PgBouncer in session mode: the plain adapter's behaviour."""


class PgSessionModeAdapter(_SessionMode, PgClassicAdapter):
    """PyGreSQL classic ``pg`` behind PgBouncer in session mode: the plain adapter's behaviour."""


_PRESETS: dict[tuple[str, str], type[DriverAdapter]] = {
    ("psycopg", "transaction"): PsycopgTransactionModeAdapter,
    ("pgdb", "transaction"): PgdbTransactionModeAdapter,
    ("pg", "transaction"): PgTransactionModeAdapter,
    ("psycopg", "session"): PsycopgSessionModeAdapter,
    ("pgdb", "session"): PgdbSessionModeAdapter,
    ("pg", "session"): PgSessionModeAdapter,
}


def behind_pgbouncer(pool_mode: str, driver: str = "psycopg") -> type[DriverAdapter]:
    """The adapter class for ``driver`` behind PgBouncer in ``pool_mode``, for ``driver=``.

    ``pool_mode``: ``"transaction"`` or ``"session"`` (PgBouncer's
    ``pool_mode``); ``driver``: ``"psycopg"``, ``"pgdb"`` or ``"pg"``.
    """
    if not isinstance(pool_mode, str):
        raise TypeError(f"pool_mode: expected a str, got {type(pool_mode).__name__}")
    if not isinstance(driver, str):
        raise TypeError(f"driver: expected a str, got {type(driver).__name__}")
    if pool_mode == "statement":
        raise ValueError(
            "pool_mode: PgBouncer's statement mode forbids multi-statement transactions,"
            " which tether's pools rely on; use 'transaction' or 'session'"
        )
    if pool_mode not in POOL_MODES:
        raise ValueError(f"pool_mode: expected 'transaction' or 'session', got {pool_mode!r}")
    if driver not in _BASES:
        raise ValueError(f"driver: expected 'psycopg', 'pgdb' or 'pg', got {driver!r}")
    return _PRESETS[(driver, pool_mode)]
