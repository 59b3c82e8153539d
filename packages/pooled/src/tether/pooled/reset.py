"""Reset on return: what happens to a connection between two users.

A connection given back to the pool must not carry anything of its last
user over to the next one. tether does, in this order:

1. **Roll back** an open transaction -- always, whatever ``reset`` says.
   Whether one is open is read from the driver's own state (psycopg's
   transaction status, sqlite3's ``in_transaction``...) through the steady
   connection, so a clean connection costs no round trip. DBUtils' default
   ``reset=True`` sends a ``ROLLBACK`` on every return; with ``reset=False``
   it rolls back only transactions started with ``begin()``, so the next user
   could commit the previous user's half-done work. tether never allows that:
   ``reset=False``/``None`` are accepted and behave like ``True``.
2. **Reset the session** when ``reset_session=True`` (or, for
   :class:`~tether.pooled.PooledPg`, ``reset=RESET_COMPLETELY``): the driver
   adapter's ``reset_session()`` -- ``DISCARD ALL`` on PostgreSQL (settings,
   temp tables, prepared statements, advisory locks, ``LISTEN``),
   ``COM_RESET_CONNECTION`` on MariaDB/MySQL (user variables, temp tables...).
   One round trip per return: use it when users change session state.
   The reset also undoes what ``setsession`` and ``on_connect`` set up, so
   both are run again right after it (one more round trip per statement):
   the next borrower gets the session a new connection would have.
3. **Call your function** when ``reset`` is a callable: ``reset(raw)`` with
   the driver's connection, for anything else (``RESET ROLE``, clearing a
   cache...).
4. **Set driver settings back** -- always, whatever ``reset`` says: what the
   borrower changed on the driver connection (``autocommit``, isolation
   level, read-only...) is set back to what the pool opened it with, and its
   cursors stop working (:meth:`tether.steady.SteadyBase.end_checkout`, called
   by the pool after this policy ran). Nothing is even compared when nothing
   reached the driver connection past tether.

A connection whose reset fails in any step is closed and replaced, never
handed out again: a half-reset session is worse than a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Any, NamedTuple

from tether.simple_pool.checks import check_bool
from tether.simple_pool.drivers import DriverAdapter
from tether.steady import SteadyBase

__all__ = [
    "RESET_ALWAYS_ROLLBACK", "RESET_COMPLETELY", "ResetPolicy", "check_reset", "reset_policy",
]  # fmt: skip

#: DBUtils' ``pooled_pg`` constants for ``reset``.
RESET_ALWAYS_ROLLBACK = 1
RESET_COMPLETELY = 2

ResetCallback = Callable[[Any], object]


class ResetError(Exception):
    """Internal: the connection cannot be reused (its reset failed or it was lost)."""


class RollbackTimeout(ResetError):
    """Internal: the rollback did not finish in time; the driver connection was dropped."""


class ResetPolicy(NamedTuple):
    """How connections are reset on return (see the module docstring)."""

    session: bool
    callback: ResetCallback | None

    @property
    def always(self) -> bool:
        """Whether something must run on every return, not only after a transaction."""
        return self.session or self.callback is not None

    def run(
        self, con: SteadyBase, adapter: DriverAdapter, timeout: float, known: bool | None = None
    ) -> None:
        """Reset ``con``, its rollback bounded by ``timeout`` seconds; raises when it must not be
        reused.

        The rollback waits for the server ``timeout`` seconds at most (the pool's
        ``checkout_timeout``, as PersistentDB bounds its own): found by an
        outside attack, a checkin after a psycopg ``stream()`` left half-read
        waited forever (the stream holds psycopg's connection lock, which
        ``rollback()`` takes), as one does behind a server that stopped
        answering. A rollback that did not finish in time drops the driver
        connection (the server rolls back a session that ends). ``known``:
        ``con.transaction_open()`` when the caller read it already (one driver
        read less); a rollback is also made for what only ``needs_rollback()``
        finds.
        """
        # A lost connection counts as rolled back and is dropped.
        started = monotonic()
        rollback = known or con.needs_rollback()  # known False: only the maybe is asked again
        if rollback and not con.roll_back_within(timeout):
            if monotonic() - started < timeout:
                # It failed at once: the session was gone (a kill, a restart),
                # which a pool drops without a warning, as any lost connection.
                raise ResetError("the connection was lost")
            raise RollbackTimeout(
                f"its rollback did not finish within {timeout:g} s (checkout_timeout);"
                " the connection was closed (the server rolls back with it)"
            )
        if not (self.session or self.callback is not None):
            # Nothing else to run: the rollback above was tether's own, so nothing
            # reached the driver connection past tether and end_checkout() need not
            # compare its settings (nor the cursor class be looked up again).
            if not con.connected:
                raise ResetError("the connection was lost")
            return
        raw = con.escape_to_driver()  # the reset talks to the driver connection directly
        if raw is None:
            raise ResetError("the connection was lost")
        if self.session:
            # Bounded by what is left of the timeout, where the adapter can bound it (a
            # checkin behind a stopped server hung in DISCARD ALL: fourth outside attack).
            done = adapter.reset_session_within(raw, max(0.0, timeout - (monotonic() - started)))
            if done is None:
                adapter.reset_session(raw)
            elif not done:
                raise RollbackTimeout(
                    f"its session reset did not finish within {timeout:g} s (checkout_timeout);"
                    " the connection is closed"
                )
            con.prepare_again()  # undone by the reset: setsession and on_connect, as on a new one
        if self.callback is not None:
            self.callback(raw)


def check_reset(reset: Any) -> Any:
    """``reset`` checked, in one value per meaning: None and False are True (see above).

    True, a callable ``reset(raw)``, or one of PooledPg's ints (0,
    RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY; :func:`reset_policy` refuses
    ints for PooledDB). The one check of ``reset``, for the options object
    and the policy alike.
    """
    if reset is None or reset is False:
        return True  # an open transaction is always rolled back: the same as True
    if isinstance(reset, bool) or callable(reset):
        return reset
    if isinstance(reset, int):
        if reset not in (0, RESET_ALWAYS_ROLLBACK, RESET_COMPLETELY):
            raise ValueError(
                "reset: expected 0, RESET_ALWAYS_ROLLBACK (1), RESET_COMPLETELY (2),"
                f" a bool or a callable, got {reset}"
            )
        return reset
    raise _not_a_reset(reset)


def _not_a_reset(reset: Any) -> TypeError:
    return TypeError(
        "reset: expected a bool, None or a callable reset(raw_connection),"
        f" got {type(reset).__name__}"
    )


def reset_policy(reset: Any, reset_session: Any, *, classic: bool = False) -> ResetPolicy:
    """Check and combine ``reset`` (DBUtils' parameter, or a callable) and ``reset_session``."""
    session = check_bool("reset_session", reset_session)
    reset = check_reset(reset)
    if isinstance(reset, bool):
        return ResetPolicy(session, None)
    if callable(reset):
        return ResetPolicy(session, reset)
    if not classic:  # an int: PooledPg's constants only
        raise _not_a_reset(reset)
    return ResetPolicy(session or reset == RESET_COMPLETELY, None)
