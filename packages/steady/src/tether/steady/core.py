"""The rule every steady connection follows: reopen when it is safe, and only then.

A steady connection wraps a driver connection and replaces it with a fresh
one when it is lost (the server restarted, a firewall dropped the socket,
``maxusage`` or ``max_lifetime`` was reached). The replacement is transparent
to the application *only where nothing can be lost by it*:

* **Outside a transaction**, a statement that fails because the connection
  is gone is run once more on a new connection, but only when the driver
  adapter proves it never reached the server: a statement may already have
  been applied when the connection broke. Outside autocommit mode such a
  statement began a transaction, so it is lost as one is (below).
* **Inside a transaction** (after ``begin()``, or implicitly: a statement
  ran on a non-autocommit connection since the last commit or rollback) the
  server has already discarded the work done so far. Retrying the next
  statement on a new session would commit the rest of the transaction
  without its beginning. So the driver's error reaches the caller, nothing
  is retried, and the connection is replaced only after the application
  has ended the transaction with ``rollback()`` (or ``commit()``, which
  fails). DBUtils does retry here when ``begin()`` was not called, and
  commits half a transaction; tether does not.
* A failed ``commit()`` is never retried: its outcome is unknown.

This module holds that logic once. :class:`SteadyBase` is shared by the
DB-API flavour (:mod:`tether.steady.dbapi`) and PyGreSQL's classic flavour
(:mod:`tether.steady.classic`); those add only thin proxies. Everything a
driver does differently (what "lost" looks like, whether a transaction is
open) is asked of the driver adapter from :mod:`tether.simple_pool.drivers`.

A steady connection is used by one thread at a time, like the driver
connection it wraps; the pools above make sure of that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn, Union

from tether.simple_pool import Uncopyable
from tether.simple_pool.drivers import DriverAdapter, adapter_for, refine
from tether.simple_pool.errors import ConfigurationError

from .errors import PingStatementError, SteadyDBError
from .options import SteadyOptions
from .ping import parse_ping
from .state import MANUAL, SessionState

log = logging.getLogger("tether.steady")

#: What ``failures`` accepts: an exception class or a tuple of them.
Failures = Union[type[BaseException], tuple[type[BaseException], ...]]
#: ``setsession``: SQL statements run on every new underlying connection.
SetSession = Sequence[str]

#: Bits of the ``ping`` flag (as in DBUtils).
PING_ON_REQUEST, PING_ON_CURSOR, PING_ON_EXECUTE = 1, 2, 4

#: Seconds after a statement answered during which the next one does not peek
#: at the socket first. The peek (a poll() system call) is what makes a restart
#: between statements transparent; a session that answered a moment ago is
#: alive, and a server that ends it within this window races statements that
#: were already in flight anyway. HikariCP skips its aliveness check on the
#: same grounds (``aliveBypassWindowMs``, 500 ms there). Measured: the peek is
#: about 4 us of a 62 us ``SELECT 1`` round trip on loopback.
ALIVE_BYPASS = 0.001


class SetSessionError(SteadyDBError):
    """A ``setsession`` statement or the ``on_connect`` callback failed on a new connection.

    The new connection is closed: a half-prepared session is never used.
    """


class SteadyBase(Uncopyable):
    """The reopen/transaction state machine shared by every steady connection."""

    # Every attribute of tether's own is a slot. A steady connection is moved
    # to a forwarding subclass once its driver connection is known (see
    # forwarding.py), and that ``__class__`` assignment materialises an
    # instance's dict: from then on CPython 3.11 reads each attribute in it
    # through the generic lookup, measured at about 320 instructions instead
    # of about 50 for a slot, a dozen times per request. (3.12 and 3.13 do not
    # have this cost.) Subclasses add no slots of their own, except a mixin
    # that no other subclass combines with (persistent's), so their layouts
    # stay compatible; ``__dict__`` stays for names a user assigns.
    __slots__ = (
        "__dict__", "__weakref__", "_adapter", "_args", "_baseline", "_close_timeout",
        "_closed",
        "_cursor_checks", "_cursor_class", "_dead", "_driver_class", "_execute_checks",
        "_kwargs", "_left_busy", "_log", "_max_lifetime", "_maxusage",
        "_options", "_ping_flags", "_pinger", "_pinger_bounded", "_raw",
        "_state", "_unlimited", "pings_on_request",
    )  # fmt: skip

    _raw: Any  # the driver's connection, or None once closed
    #: The class of a DB-API connection's cursors (see dbapi.py); unused by the classic API.
    _cursor_class: type

    def __init__(
        self,
        creator: ModuleType | Callable[..., Any],
        options: SteadyOptions,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        driver: str | DriverAdapter | type[DriverAdapter] | None,
    ) -> None:
        self._raw = None  # first, so that __del__ works whatever fails below
        # The driver connection lost last, closed but kept so that its state
        # (psycopg's ``closed``/``broken``...) can still be read: frameworks
        # look there to tell a disconnect. Reading it must not reconnect.
        self._dead: Any = None
        # Everything known about the session (transaction, liveness, usage,
        # settings the borrower changed), in one object: see state.py.
        self._state = SessionState()
        # The driver settings of the first connection, once prepared (its
        # autocommit, isolation level... as the creator's arguments,
        # ``setsession`` and ``on_connect`` left them): the configured state
        # that :meth:`end_checkout` gives every pool borrower back.
        self._baseline: dict[str, Any] | None = None
        # The class of the driver's connections (what isinstance checks see; see dbapi.py).
        self._driver_class: type | None = None
        # Every argument was checked by the options object (steady's
        # options.py), before the first connection is opened. The settings are
        # read from it (one source), except what every statement reads: those
        # few are copied into slots of their own here (one load, not two).
        if not isinstance(options, SteadyOptions):
            raise TypeError(f"options: expected SteadyOptions, got {type(options).__name__}")
        self._options = options
        self._adapter = adapter_for(creator, driver)
        self._maxusage = options.maxusage
        self._ping_flags, self._pinger = parse_ping(options.ping, self._adapter)
        # Read on every cursor and statement: plain flags, not bit tests (an
        # unspecialised ``&`` and a global load, measured on CPython 3.11).
        self._cursor_checks = bool(self._ping_flags & PING_ON_CURSOR)
        self._execute_checks = bool(self._ping_flags & PING_ON_EXECUTE)
        #: Whether the ``ping`` setting asks for a check when the connection is
        #: handed out. Layer API (a plain attribute: read at every checkout).
        self.pings_on_request = bool(self._ping_flags & PING_ON_REQUEST)
        # The adapter's after-statement read, looked up once (see dbapi.py's
        # execute); again whenever the adapter is refined (_connect_raw).
        self._left_busy = self._adapter.left_busy
        # The adapter's own check can be bounded in time (ping(raw, timeout)); a user's cannot.
        self._pinger_bounded = self._pinger == self._adapter.ping
        self._close_timeout: float | None = None  # see close_timeout
        self._max_lifetime = options.max_lifetime
        logger = options.logger
        self._log = logger if logger is not None else log
        self._args, self._kwargs = args, kwargs
        self._closed = False
        # Without maxusage/max_lifetime a statement never forces a reopen.
        self._unlimited = not self._maxusage and self._max_lifetime is None
        self._raw = self._open()
        self._dead = None

    # -- opening and closing ----------------------------------------------------------------

    def _open(self) -> Any:
        """A new, fully prepared driver connection (setsession and on_connect done)."""
        raw = self._connect_raw(self._kwargs)
        state = self._state
        state.opened_at = state.alive_at = time.monotonic()
        state.configured = self._adapter.configuration(raw)
        return raw

    def _connect_raw(self, kwargs: dict[str, Any], carried: dict[str, Any] | None = None) -> Any:
        """A new, fully prepared driver connection made with ``kwargs``; nothing else is changed.

        Separate from :meth:`_open` so that a pool can make it on a helper
        thread bounded by its deadline (see ``call_within``) and install it
        with :meth:`_reopen` only if it came in time: a connect that finishes
        late must not touch this connection's state. ``carried``: the driver
        settings the session it replaces had (:meth:`_carried`), made again
        last.
        """
        # open(): a refused login or arguments that cannot work raise ConfigurationError, on
        # the first open and on a reopen.
        raw = self._adapter.open(*self._args, **kwargs)
        # A creator tether could not place (a lambda, a wrapper) gets its
        # driver's adapter once the connection shows which driver it is.
        unrefined = self._adapter
        self._adapter = adapter = refine(unrefined, raw)
        if adapter is not unrefined:
            self._left_busy = adapter.left_busy  # (see __init__) the refined adapter's
            # The check too: the driver's own, bounded one, or a ping statement
            # whose rejection by the server the driver's errors tell apart.
            self._ping_flags, self._pinger = parse_ping(self._options.ping, adapter)
            self._pinger_bounded = self._pinger == adapter.ping
        try:
            self._prepare(raw, adapter)
            if self._baseline is None:
                self._baseline = adapter.settings(raw)
                self._driver_class = type(raw)
            # The borrower's own settings last: the pool's (setsession,
            # on_connect) are the configured state, what the borrower changed
            # since is made again over it (found by an outside attack: replayed
            # first, an on_connect that set autocommit on undid the borrower's
            # autocommit = False at a transparent reopen, and its rollback()
            # then undid nothing).
            for replay in self._state.replay.values():
                replay(raw)
            if carried is not None:
                # What the session had that no replay covers: a mode changed
                # in SQL (PyMySQL's SET autocommit = 0), a driver attribute
                # set past tether (dbapi_connection.autocommit = True). Set
                # only where it differs, so usually nothing is sent.
                adapter.restore_settings(raw, carried)
        except Exception as exc:
            lost = adapter.is_connection_lost(raw, exc)
            adapter.close(raw)
            if lost:
                # The server ended the session while it was being prepared (an
                # administrator, a failover): the connect failed, as an outage's
                # does, not the setup (found by an outside attack: on pgdb, which
                # reports the loss as ProgrammingError, a pool raised this
                # SetSessionError and did not retry).
                raise
            raise SetSessionError(
                f"preparing a new {adapter.name} connection failed ({type(exc).__name__}: {exc});"
                " the connection was closed"
            ) from exc
        return raw

    def _prepare(self, raw: Any, adapter: DriverAdapter) -> None:
        """The pool's session setup on ``raw``: ``setsession``, then ``on_connect``."""
        setsession = self._options.setsession
        for sql in setsession:
            adapter.execute(raw, sql)
        if setsession and adapter.in_transaction(raw) is not False:
            # On a non-autocommit connection the statements opened a
            # transaction; left open, the user's first rollback() would
            # undo them (SET is transactional in PostgreSQL).
            adapter.commit(raw)
        on_connect = self._options.on_connect
        if on_connect is not None:
            on_connect(raw)
            if adapter.in_transaction(raw):
                # The same for SQL an on_connect ran: left open, the borrower
                # joined that transaction (an old snapshot) and its rollback()
                # undid the setup (found by an outside attack). (Only where the
                # driver tells: None, unknown, is left alone.)
                adapter.commit(raw)

    def prepare_again(self) -> None:
        """Layer API: run ``setsession`` and ``on_connect`` again on the current driver connection.

        For a pool that reset the session on the server (``DISCARD ALL``,
        ``COM_RESET_CONNECTION``), which undoes what they set up: the next
        borrower gets the session a new connection would have (found by an
        outside attack: behind SQLAlchemy's ``TetherPool`` an engine-wide
        ``isolation_level``, set by the connect event, was gone after the first
        reset). Raises what they raise; the caller must then drop the connection.
        """
        raw = self._raw
        if raw is not None:
            self._prepare(raw, self._adapter)

    def _reopen(self, reason: str, raw: Any = None) -> Any:
        """Replace the driver connection; the caller made sure no transaction is open.

        ``raw``: a connection made already (by :meth:`_connect_raw`), else one is opened here.
        """
        carried = self._carried() if raw is None else None  # read before the old one goes
        configured = self._carried_configuration()
        old, self._raw = self._raw, None
        self._state.new_session(None)  # nothing of the old session carries over, even if this fails
        if old is not None:
            self._adapter.close(old)
        self._dead = None
        self._log.info("tether: reopening %s connection: %s", self._adapter.name, reason)
        if raw is None:
            raw = self._connect_raw(self._kwargs, carried)
        state = self._state
        state.new_session(time.monotonic())
        # The pool's configuration, taken before any borrower reached this one.
        adapter = self._adapter
        state.configured = adapter.configuration(raw)
        if configured is not None:
            # The borrower's (a dumper it registered) stays for the rest of its
            # checkout, as its settings do; end_checkout puts the pool's back.
            adapter.restore_configuration(raw, configured)
        self._raw = raw
        return raw

    def _reached_session(self) -> Any:
        """The driver connection about to be replaced, if a borrower reached it past tether.

        None when nothing can differ from what a new connection gets
        (``touched`` is off since the last ended checkout) or none is known.
        """
        if not self._state.touched:
            return None
        return self._raw if self._raw is not None else self._dead

    def _carried_configuration(self) -> Any:
        """The configuration of the session about to be replaced, if a borrower reached it.

        Found by the model test: a psycopg dumper a borrower registered was
        gone after a transparent reopen in its checkout (its next statement
        raised "cannot adapt type"), while its settings were kept.
        """
        old = self._reached_session()
        if old is None:
            return None
        try:
            return self._adapter.configuration(old)
        except Exception:  # a driver whose closed connection refuses to answer
            return None

    def _carried(self) -> dict[str, Any] | None:
        """The driver settings of the session about to be replaced, where a reopen must keep them.

        A transparent reopen gives the borrower the session it had: the
        pool's settings (``setsession``, ``on_connect``), then the setters it
        called through tether (the replay), then this: the adapter's
        ``settings()`` read from the old driver connection, the same
        no-round-trip read :meth:`end_checkout` compares with the baseline.
        It covers what tether learns only from the driver's state: found by
        an outside attack, PyMySQL's ``SET autocommit = 0`` in SQL (seen by
        ``_went_busy`` after the statement, and by ``get_autocommit()``) was
        lost at a reopen after an idle kill, so the borrower's
        ``rollback()`` undid nothing; ``SET autocommit = 1`` the other way
        round left its INSERT uncommitted, discarded at checkin. A session
        the server ended still answers: its last state is in the driver.

        None when nothing can differ from what a new connection gets:
        nothing reached the session past tether's replay since the last
        ended checkout (``touched``), or no old connection is known.
        """
        old = self._reached_session()
        if old is None:
            return None
        try:
            settings = self._adapter.settings(old)
        except Exception as exc:  # a driver whose closed connection refuses to answer (pg.DB)
            self._log.debug(
                "tether: the settings of the lost %s connection cannot be read (%s)",
                self._adapter.name,
                _describe(exc),
            )
            return None
        baseline = self._baseline
        if baseline is None:
            return settings
        # Only what differs from the configured state is the borrower's: the
        # rest is on_connect's to decide (Django's backend closes a dead
        # session and has on_connect open the new one in the mode its
        # atomic() block asked for; carried, the old session's configured
        # autocommit undid that and the block committed statement by statement).
        return {name: value for name, value in settings.items() if baseline.get(name) != value}

    def retire(self) -> None:
        """Really close, whatever ``closeable`` says; idempotent and never raising.

        Layer API: what a pool calls to take a connection out of service.
        """
        raw, self._raw = self._raw, None
        if raw is not None:
            self._dead = raw  # closed, but its state stays readable (``db.closed`` is True)
        self._closed = True
        state = self._state
        state.new_session(None)
        # Its cursors stop working too, as at the end of a checkout (the
        # generation: a fetch's own check).
        state.lease += 1
        state.generation += 1
        if raw is not None:
            self._adapter.close(raw)

    def abandon(self) -> None:
        """Let go of the driver connection after ``fork()``, without closing it.

        Layer API. The parent still uses that session; the driver adapter
        makes sure this process can never write to it. The next operation
        here opens a connection of this process's own.
        """
        raw, self._raw = self._raw, None
        self._state.new_session(None)
        if raw is not None:
            self._adapter.abandon(raw)

    def close(self) -> None:
        """Close the connection if ``closeable``; otherwise only end an open transaction.

        A non-closeable connection (the kind pools hand out) stays open for
        the next user, so it must not carry this user's transaction over.
        """
        if self._options.closeable:
            self.retire()
        elif self._raw is not None and self.transaction_open():
            timeout = self._close_timeout
            if timeout is None:
                self._end_transaction()
                return
            try:
                self.roll_back_within(timeout)  # out of time: the session is closed
            except Exception:
                self._end_transaction()  # could not be rolled back: as without a bound

    def roll_back_block(self) -> None:
        """A ``with`` block raised: roll back, within :attr:`close_timeout` when one is set.

        Layer API (the context managers of steady's connections call it): with
        no ``close_timeout``, :meth:`rollback`, as DB-API drivers do.
        """
        timeout = self._close_timeout
        if timeout is None:
            self.rollback()
        else:
            self.roll_back_within(timeout)

    @property
    def steady_options(self) -> SteadyOptions:
        """The checked settings this connection was made with (read-only; see options.py).

        Not ``options``: PyGreSQL's connections have an attribute of that name,
        which a steady connection passes through.
        """
        return self._options

    @property
    def close_timeout(self) -> float | None:
        """Seconds :meth:`close` (and a ``with`` block that raises) wait for a rollback.

        Layer API: None (the default), as long as the driver's rollback takes.
        A persistent generator sets its ``checkout_timeout`` here (a stopped
        server hung ``db.close()``: fourth outside attack); out of time, the
        driver connection is closed (the server rolls back a session that
        ends) and the next statement opens a new one.
        """
        return self._close_timeout

    @close_timeout.setter
    def close_timeout(self, seconds: float | None) -> None:
        object.__setattr__(self, "_close_timeout", seconds)  # past the forwarding subclass

    def _remember(self, name: str, replay: Callable[[Any], object]) -> None:
        """Keep a session setting made on the driver connection, to replay it after a reopen."""
        state = self._state
        state.replay[name] = replay
        state.touched = True
        state.settled = False  # the setting may be the autocommit mode itself

    # -- the layer API: what a pool calls ------------------------------------------------------
    #
    # The pools (tether.pooled, tether.persistent) are versioned separately and
    # use only these names, never an underscore one (their tests check it).

    @property
    def connected(self) -> bool:
        """Whether a driver connection is in place (else the next operation opens one)."""
        return self._raw is not None

    @property
    def retired(self) -> bool:
        """Whether :meth:`retire` (or ``close()`` of a closeable connection) closed it for good."""
        return self._closed

    @property
    def session_lost(self) -> bool:
        """Whether the session was lost inside the transaction now open (no round trip).

        Its work is gone with the server's rollback: a pool that gets it back
        has nothing to warn about (the borrower got the driver's error).
        """
        raw = self._raw
        return self._state.lost or (raw is not None and self._adapter.is_closed(raw))

    def transaction_open(self) -> bool:
        """Whether work done on this session since the last commit/rollback would be lost.

        The one transaction test of every layer: ``begin()`` was called, or
        the connection was lost inside a transaction, or a driver block lent
        through tether (``with db.transaction():``, a pipeline, a ``copy()``)
        is open, or the driver says a transaction is open (where it cannot
        tell: a statement ran outside autocommit since the last commit or
        rollback). No round trip. (The open block counts by itself: found by
        an outside attack, a session lost inside ``with db.transaction():`` in
        autocommit mode, and first met by a savepoint's enter, was replaced
        under the block and its next INSERT committed alone.)
        """
        state = self._state
        if state.settled:
            return False
        if state.begun or state.lost or state.blocks:
            return True
        raw = self._raw
        if raw is None:
            return False
        in_transaction = self._adapter.in_transaction(raw)
        return state.dirty if in_transaction is None else in_transaction

    def idle(self) -> bool:
        """Whether a driver connection is in place and no transaction is open (no round trip).

        What a pool asks at checkin: then :meth:`end_checkout` alone readies
        the connection for the next borrower. (A settled session, one whose
        last statement left it idle in autocommit mode, answers without
        looking at the driver: settled implies connected.)
        """
        state = self._state
        if state.settled:
            return True
        raw = self._raw
        if raw is None or state.begun or state.lost or state.blocks:
            return False
        in_transaction = self._adapter.in_transaction(raw)
        if in_transaction is None:  # the driver cannot tell: see needs_rollback()
            return not (state.dirty or state.touched)
        return not in_transaction

    def needs_rollback(self) -> bool:
        """Whether a checkin must roll back: :meth:`transaction_open`, or a transaction
        only the server may know of (no round trip).

        Layer API, for a pool's checkin and a persistent generator's next
        request. Where the driver cannot tell whether a transaction is open
        (PyMySQL outside autocommit: a plain SELECT opens an InnoDB snapshot
        without the server's in-transaction flag), anything that reached the
        driver connection past tether during this checkout may have been a
        statement: found by an outside attack, a ``SELECT ... FOR UPDATE`` run
        through ``db.query()`` kept its row locks while the connection sat idle
        in the pool, and the next borrower ran inside that transaction. During
        the checkout, not since tether's last commit: a driver cursor taken
        before the commit can open a transaction after it, unseen (found by the
        next attack, on a driver tether has no adapter for). So such a checkout
        always ends with a rollback, without a warning (a maybe). Not
        the reopen rule's test: a statement after such an escape is still
        replaced transparently when the session was lost (the rule asks
        :meth:`transaction_open`), as before.
        """
        if self.transaction_open():
            return True
        raw = self._raw
        return self._state.touched and raw is not None and self._adapter.in_transaction(raw) is None

    def needs_reset(self) -> bool:
        """Whether the next borrower would not start clean without more than :meth:`end_checkout`.

        True when a transaction is open (to be rolled back), something
        reached the driver connection past tether (its settings are compared
        at :meth:`end_checkout`), or a commit failed with its session (a
        repeated commit raises until :meth:`end_checkout`). No round trip.
        """
        state = self._state
        return state.touched or state.commit_failed or self.transaction_open()

    def check(self, timeout: float | None = None) -> bool | None:
        """The liveness check at checkout, if ``ping`` asks for one; nothing is reopened.

        Returns None when no check is due, else whether the connection is
        alive. ``timeout``: the most seconds to wait for the server (the
        driver adapter's check honours it; a user's ``ping`` does not). A
        check that fails or runs out of time leaves the driver connection
        closed (it may be half-read); outside a transaction the next
        operation opens a new one.
        """
        return self._ping_check(PING_ON_REQUEST, reconnect=False, timeout=timeout)

    def probe(self, timeout: float | None = None) -> bool:
        """Whether the connection answers a liveness check now, whatever ``ping`` says.

        For a pool's idle validation: nothing is reopened or closed, a failed
        check is only reported. ``timeout`` as for :meth:`check`.
        """
        raw = self._raw
        if self._state.settled is MANUAL:
            self._state.settled = False  # (see _ping_check)
        try:
            if raw is None or self._adapter.is_closed(raw):
                return False
            if self._pinger_bounded:  # bounded: a blackholed server never answers
                return bool(self._adapter.ping(raw, timeout))
            return self._ping_with(raw)
        except PingStatementError:
            return True  # it answered; the checkout that pings raises the error
        except Exception:
            return False

    def _ping_with(self, raw: Any) -> bool:
        """``ping``'s check (a statement, a callable, or the adapter's unbounded one) on ``raw``.

        The user's statement or callable outside autocommit mode opens a
        transaction (psycopg, pgdb; an InnoDB snapshot on PyMySQL): found by an
        outside attack, a pool's validation left its idle connection "idle in
        transaction", and the next borrower read that old snapshot (and a kill
        meanwhile was not replaced transparently, the session looking busy).
        What the check opened on an idle session is rolled back, as the
        adapter's own check leaves the state as it was.
        """
        if self._pinger_bounded:  # the adapter's own check leaves the state as it was
            return bool(self._pinger(raw))
        idle = not self.transaction_open()
        try:
            alive = self._pinger(raw)
        except PingStatementError:
            if idle:
                self._end_check_transaction(raw)
            raise  # a configuration error: the caller must know
        if idle and not self._end_check_transaction(raw):
            return False
        return alive

    def _end_check_transaction(self, raw: Any) -> bool:
        """Roll back what a check opened on an idle session; False if that did not get through."""
        if self._adapter.in_transaction(raw) is not False:
            # Also after a check that failed: a statement that raised leaves
            # psycopg's session in an aborted transaction, which then failed
            # every statement and was never replaced (found by an outside attack).
            try:
                self._adapter.rollback(raw)
            except Exception:
                return False  # the rollback did not get through: dead now
        return True

    def end_checkout(self) -> bool:
        """End one borrower's use: the next one starts in the configured state.

        Called by a pool when a connection is given back, after any open
        transaction was rolled back. Three things, none a round trip unless
        a setting must be changed back:

        * every cursor made during the checkout stops working
          (:class:`~tether.steady.InvalidCursorError`), so a handle kept past
          ``close()`` can never run on the next borrower's session;
        * driver settings the borrower changed (``autocommit``,
          ``isolation_level``, ``read_only``...: whatever the driver adapter's
          ``settings()`` covers) are set back to those the first connection
          had once prepared (HikariCP's "dirty bits": only when something
          reached the driver connection past tether is anything compared);
        * they are no longer replayed on a reopened connection: a transparent
          reopen gives the pool's settings, not the last borrower's.

        Returns True if settings had to be changed back. Raises the driver's
        error when that fails: the connection must then not be reused.
        """
        state = self._state
        state.lease += 1
        state.generation += 1
        state.blocks = 0  # a block kept past the checkout is refused from now on
        # A slot store (a store on the connection would go through __setattr__).
        state.commit_failed = False  # a failed commit is this checkout's: the next one starts clean
        if not state.touched:
            return False
        state.replay.clear()
        state.touched = False
        state.native = None  # the settings put back below may include the cursor class
        raw, baseline = self._raw, self._baseline
        if state.spoiled and raw is not None:
            self._drop_configured(raw)
        if raw is None or baseline is None:
            return False  # a new connection is opened with the configured settings anyway
        # Nothing is open now (the caller ended it): what dirty recorded was
        # under the borrower's settings, which the restore below may change.
        state.settled = state.dirty = False
        adapter = self._adapter
        changed = adapter.restore_settings(raw, baseline)
        configured = state.configured
        if configured is not None and adapter.restore_configuration(raw, configured):
            changed = True
        if changed:
            self._log.debug(
                "tether: %s connection: driver settings set back for the next borrower",
                self._adapter.name,
            )
        return changed

    def keep_configuration(self) -> None:
        """Make the driver connection's configuration now the one put back at every checkin.

        Layer API, for a framework that sets a connection up at the first
        checkout that brings it (SQLAlchemy's ``connect`` event on a tether
        pool it did not create: the dialect registers psycopg's hstore
        adapters on the connection). What a borrower adds is otherwise taken
        back at checkin (:meth:`end_checkout`); this makes it the pool's, for
        this driver connection. Settings (``autocommit``...) are not affected.
        """
        raw = self._raw
        if raw is not None:
            self._state.configured = self._adapter.configuration(raw)

    def _drop_configured(self, raw: Any) -> NoReturn:
        """Close ``raw``, configured past what can be undone, and say so (see end_checkout)."""
        self._raw, self._dead = None, raw
        self._state.new_session(None)
        self._adapter.close(raw)
        self._log.debug(
            "tether: %s connection closed at checkin: the borrower called a driver method"
            " whose effect cannot be undone",
            self._adapter.name,
        )
        raise SteadyDBError(
            f"the {self._adapter.name} connection was closed: a driver method whose effect"
            " cannot be undone was called on it (its adapter's unrestorable:"
            f" {', '.join(sorted(self._adapter.unrestorable))})"
        )

    def finish_checkout(self) -> bool:
        """End the checkout if that is all there is to do: :meth:`idle`, then :meth:`end_checkout`.

        Layer API, for a pool's checkin: one call where the connection is
        idle. True: it was (connected, no transaction open), its cursors are
        retired and changed driver settings set back, so it is ready for the
        next borrower. False: nothing was done; the caller ends the
        transaction (or finds the connection lost), then calls
        :meth:`end_checkout`. Raises as :meth:`end_checkout` does.

        The common case (the last statement left the session idle in
        autocommit mode, nothing reached the driver past tether) is two
        counter bumps: measured, a pool's checkout+checkin spent ~1,000 of
        its instructions on the two calls this replaces.
        """
        state = self._state
        if state.settled and not state.touched:  # settled implies connected and idle
            state.lease += 1
            state.generation += 1
            return True
        if not self.idle():
            return False
        self.end_checkout()
        if self._unlimited:
            # The driver just said idle, with the configured settings: settled
            # (in autocommit mode, as after an autocommit statement; else
            # MANUAL), so the next checkins and the transaction test ask the
            # driver nothing until something happens (a checkout that runs no
            # statement paid two driver reads per cycle: measured in the
            # bench's cycle workload).
            state.settled = True if self._adapter.autocommit(self._raw) else MANUAL
        return True

    def roll_back_within(self, timeout: float) -> bool:
        """Roll back whatever is open, waiting for the server at most ``timeout`` seconds.

        True when the transaction ended (rolled back, or gone with a lost
        connection). False when the rollback did not finish in time: the
        driver connection is then closed and forgotten (the server rolls
        back a session that ends; its answer may still be on the way, so it
        is never used again), and the next operation opens a new one. Where
        the adapter cannot bound a rollback (the generic adapter; psycopg
        inside its ``transaction()`` block or pipeline), :meth:`rollback` runs,
        and its error is raised as there: the caller decides what becomes of
        a session that could not be rolled back (a pool discards it, a
        persistent generator reopens it within its deadline). Reopening here
        would connect with no deadline at all.
        """
        raw = self._raw
        state = self._state
        state.commit_failed = False  # a rollback, as rollback() (rule 3)
        if raw is None or state.lost:
            self._end_transaction()
            return True
        done = self._adapter.rollback_within(raw, timeout)
        if done is None:
            self.rollback()  # a lost connection counts as rolled back and is dropped
            return True
        quiet = self._quiet_after()
        state.transaction_ended()
        if done:
            # (The adapter's bounded rollback: never inside psycopg's pipeline or
            # transaction() blocks, for which it answers None.)
            if quiet:
                state.settled = MANUAL
            return True
        self._drop(raw)
        self._adapter.close(raw)
        return False

    def escape_to_driver(self) -> Any:
        """The driver connection, for use past tether (None if there is none now).

        (Not ``escape()``: PyMySQL's connections have one, reached through tether.)

        The one way out to the driver: whatever is done with it is not seen
        here, so the session's state is read again before the next statement
        and its settings are compared at :meth:`end_checkout`. (A pool's
        reset hook, ``dbapi_connection``, driver methods and attributes all
        come through here.)
        """
        self._state.unknown()
        return self._raw

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """The creator's keyword arguments for the next (re)open.

        A pool opens the first connection with connect timeouts of its own
        and then sets the user's arguments back here for later reopens.
        """
        return self._kwargs

    @connect_kwargs.setter
    def connect_kwargs(self, kwargs: dict[str, Any]) -> None:
        object.__setattr__(self, "_kwargs", kwargs)  # past SteadyDBConnection's forwarding

    @property
    def setsession(self) -> tuple[str, ...]:
        """The ``setsession`` statements run on every new driver connection."""
        return self._options.setsession

    def new_driver_connection(self, kwargs: dict[str, Any]) -> Any:
        """A new, fully prepared driver connection made with ``kwargs``; nothing else is changed.

        So that a pool can make it on a helper thread bounded by its deadline
        and install it with :meth:`replace_driver_connection` only if it came
        in time: a connect that finishes late must not touch this connection.
        """
        return self._connect_raw(kwargs, self._carried())

    def replace_driver_connection(self, reason: str, raw: Any = None) -> None:
        """Replace the driver connection now (``raw``, or a new one); no transaction may be open.

        ``reason`` is logged. The old driver connection is closed.
        """
        self._reopen(reason, raw)

    # -- ending transactions ------------------------------------------------------------------

    def _end_transaction(self) -> None:
        """Roll back whatever is open; a dead connection counts as rolled back."""
        try:
            self.rollback()
        except Exception as exc:  # a rollback that fails for another reason: start afresh
            self._log.warning(
                "tether: rollback of %s connection failed (%s); reopening it",
                self._adapter.name,
                _describe(exc),
            )
            self._reopen("rollback failed")

    # -- state ------------------------------------------------------------------------------

    def _ready(self, now: float | None = None) -> Any:
        """The driver connection to run the next operation on, reopened first if need be.

        Called outside transactions only. No round trip: only state the
        driver already has, the usage count and the age are looked at, and
        the socket is peeked unless the session answered within the last
        :data:`ALIVE_BYPASS` seconds.
        """
        raw = self._raw
        if raw is None:
            if self._closed:
                raise SteadyDBError("the steady connection is closed")
            return self._reopen("it was lost")
        if now is None:
            now = time.monotonic()
        state = self._state
        adapter = self._adapter
        if (
            (self._maxusage and state.usage >= self._maxusage)
            or (self._max_lifetime is not None and now - state.opened_at >= self._max_lifetime)
        ) and not (state.touched and adapter.in_transaction(raw) is None):
            # A reopen tether chooses, never one that could end a transaction:
            # where the driver cannot tell whether one is open and something
            # reached it past tether (a statement through a driver method), it
            # waits for the next checkout (found by an outside attack: on a
            # generic driver an INSERT run through ``db.query()`` was lost with
            # the replaced session and the rest of its transaction committed).
            if self._maxusage and state.usage >= self._maxusage:
                return self._reopen(f"maxusage ({self._maxusage}) reached")
            return self._reopen(f"max_lifetime ({self._max_lifetime:g} s) reached")
        if adapter.is_closed(raw):
            return self._reopen("the driver reports it closed")
        if now - state.alive_at >= ALIVE_BYPASS and adapter.peer_closed(raw):
            # The server ended the session while we were idle (a restart, a
            # kill): seen on the socket, before sending anything, so the
            # statement about to run is safe to send on a new connection.
            return self._reopen("the server closed the session")
        return raw

    def _still_there(self) -> bool:
        """:meth:`_ready`'s checks that a settled session needs after a pause.

        Settled implies connected, idle in autocommit mode and no
        ``maxusage`` or ``max_lifetime``: what is left is whether the driver
        or the server ended the session meanwhile. False sends the caller
        the full way, which finds out again and reopens.
        """
        return not self._adapter.is_gone(self._raw)

    def _is_lost(self, raw: Any, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (``failures`` and ``isfatal`` decide)."""
        options = self._options
        failures, isfatal = options.failures, options.isfatal
        if failures is not None:
            if not isinstance(exc, failures):
                return False
            return isfatal(exc) if isfatal is not None else True
        if not self._adapter.is_connection_lost(raw, exc):
            return False
        return isfatal(exc) if isfatal is not None else True

    def _ping_check(
        self, flag: int = PING_ON_REQUEST, reconnect: bool = True, timeout: float | None = None
    ) -> bool | None:
        """Check liveness if the ``ping`` setting asks for it at this moment (``flag``).

        Returns None when no check was made, else whether the connection is
        alive (after reopening it, when it was dead and that was allowed).
        ``timeout``: the most seconds the check may wait for the server (a
        pool's deadline); the driver adapter's check honours it, a ``ping``
        statement or callable of the user's does not. A check that ran out of
        time leaves the connection closed: its answer may still be on the way.
        """
        if not flag & self._ping_flags:
            return None
        if self._state.settled is MANUAL:
            # A ping statement of the user's may open a transaction outside autocommit.
            self._state.settled = False
        raw = self._raw
        if raw is None:
            alive = False
        elif timeout is not None and self._pinger_bounded:
            # The state before the ping: a ping that failed or ran out of time
            # leaves libpq ACTIVE (its own statement in progress), which read
            # afterwards looks like a transaction and kept the half-used
            # connection in service ("another command is already in progress").
            in_transaction = self.transaction_open()
            alive = self._adapter.ping(raw, timeout)
            if not alive:
                # Possibly half-read: never used again, whatever the state.
                self._adapter.close(raw)
                if in_transaction:
                    # Kept, closed, until the transaction ends: each of its
                    # statements fails, and rollback() forgets it (lost).
                    self._state.lost = True
                else:
                    self._drop(raw)
                    self._state.settled = False
        else:
            alive = self._ping_with(raw)
        if alive:
            return True
        if reconnect and not self.transaction_open():
            try:
                self._reopen("the ping check failed")
            except ConfigurationError:
                raise  # configuration, not a dead connection: the caller must know
            except Exception as exc:
                self._log.warning(
                    "tether: reopening %s connection failed: %s", self._adapter.name, _describe(exc)
                )
                return False
            return True
        return False

    # -- running operations -----------------------------------------------------------------

    def _run(
        self,
        call: Callable[[Any], Any],
        flag: int = PING_ON_EXECUTE,
        writes: bool = True,
    ) -> Any:
        """Run ``call(raw)`` under the reopen rule; the heart of tether.steady.

        ``call`` does one operation on the driver connection it is given, so
        it can be repeated on a new one. ``writes``: the operation may start
        or extend a transaction (a statement); False for pure reads of
        results.
        """
        raw = self._raw
        adapter = self._adapter
        state = self._state
        now = time.monotonic()
        settled = state.settled
        if (
            settled
            and not flag & self._ping_flags
            and (now - state.alive_at < ALIVE_BYPASS or self._still_there())
        ):
            # The hot path: the session is known idle, in autocommit mode (the
            # previous statement left it so) or outside it (MANUAL: tether's
            # own commit or rollback ended what its statements had begun), and
            # nothing has touched the driver connection since. Every check
            # below would find what it found then, so none is made (each costs
            # a few attribute reads in the driver: ~5,000 instructions a
            # statement outside autocommit, measured), but the socket look
            # after a pause.
            in_transaction, autocommit = False, settled is True
        else:
            # transaction_open(), inlined.
            if state.begun or state.lost or state.blocks:
                in_transaction = True
            elif raw is None:
                in_transaction = False
            else:
                txn = adapter.in_transaction(raw)
                in_transaction = state.dirty if txn is None else txn
            if not in_transaction:  # else never replaced, even if dead
                raw = self._ready(now)
                if flag & self._ping_flags:
                    self._ping_check(flag)
                    raw = self._raw
            autocommit = adapter.autocommit(raw)
        try:
            result = call(raw)
        except Exception as exc:
            result = self._recover(call, raw, exc, in_transaction, autocommit, writes)
            raw = self._raw
        self._answered(raw, now, autocommit, writes)
        return result

    def _recover(
        self,
        call: Callable[[Any], Any],
        raw: Any,
        exc: Exception,
        in_transaction: bool,
        autocommit: bool,
        writes: bool,
    ) -> Any:
        """``call(raw)`` raised ``exc``: raise it, or return ``call``'s result on a new connection.

        ``in_transaction`` and ``autocommit`` are the session's state before the call.
        """
        try:
            state = self._state
            state.settled = False
            adapter = self._adapter
            if not self._is_lost(raw, exc):
                if writes and not autocommit:
                    state.dirty = True  # a failed statement can leave a transaction open
                raise exc
            first = not in_transaction
            if in_transaction or (writes and not autocommit and not adapter.never_sent(raw, exc)):
                # Inside a transaction, or beginning one: outside autocommit
                # mode a statement that may have reached the server began a
                # transaction (rule 2: "from the first statement"), and the
                # session took whatever it did with it. A caller that catches
                # the error and goes on must not have its next statements run,
                # and then committed, on a new session (found by an outside
                # attack: statements 2 and 3 were committed without statement
                # 1). So nothing is retried until rollback().
                if first:
                    adapter.close(raw)  # (isfatal may call a live session lost)
                if not state.lost:  # once per lost transaction, not per statement after
                    state.lost = True
                    self._log.warning(
                        "tether: %s connection lost %s; not retrying."
                        " It will be reopened after rollback(). (%s)",
                        adapter.name,
                        "during the first statement of a transaction"
                        if first
                        else "inside a transaction",
                        _describe(exc),
                    )
                raise exc
            if writes and not adapter.never_sent(raw, exc):
                # It may have been applied before the connection broke:
                # running it again could apply it twice. Not only in
                # autocommit mode: a statement can commit by itself (a CALL
                # of a procedure that commits, "INSERT ...; COMMIT; ...",
                # MySQL's DDL), so the server's rollback of a lost session
                # does not prove it undone (found by an outside attack: such
                # a CALL killed mid-way ran twice). Reopen next time.
                self._drop(raw)
                adapter.close(raw)
                self._log.warning(
                    "tether: %s connection lost during a statement that may have been"
                    " applied, so it is not retried (%s)",
                    adapter.name,
                    _describe(exc),
                )
                raise exc
            return call(self._reopen(_describe(exc)))  # once; a second failure is the caller's
        finally:
            # This frame is in the traceback of the exception it raises: a
            # local bound to it is a reference cycle (exception -> traceback
            # -> frame -> exception) that keeps the cursor and everything on
            # its frames alive until the garbage collector runs, which then
            # finalises the driver objects in the middle of whatever thread
            # it interrupted (found by an outside attack: sqlite3 checkouts
            # overran checkout_timeout by seconds under lock contention).
            exc = None  # type: ignore[assignment]

    def _recover_statement(
        self, call: Callable[[Any], Any], raw: Any, exc: Exception, now: float, autocommit: bool
    ) -> Any:
        """A cursor's hot-path statement (settled: no transaction, in ``autocommit`` mode or
        not) on ``raw``, started at ``now``, raised ``exc``: :meth:`_run`'s recovery and
        bookkeeping.

        The caller clears its own reference to ``exc`` (see :meth:`_recover`).
        """
        try:
            result = self._recover(call, raw, exc, False, autocommit, True)
        finally:
            exc = None  # type: ignore[assignment]  # no cycle through this frame (see _recover)
        self._answered(self._raw, now, autocommit, True)
        return result

    def _answered(self, raw: Any, now: float, autocommit: bool, writes: bool) -> None:
        """Bookkeeping after an operation on ``raw`` that started at ``now`` succeeded."""
        # It answered: known alive until now, so the next statement within
        # ALIVE_BYPASS need not peek at the socket again.
        state = self._state
        state.alive_at = now
        if writes:
            state.usage += 1  # maxusage counts statements, as DBUtils
            state.commit_failed = False  # a statement goes on after a failed commit (rule 3)
            if autocommit:
                # One state read here saves the next statement and the pools'
                # checkin theirs. A statement can open a transaction even in
                # autocommit mode (an explicit BEGIN), or end autocommit mode
                # (MySQL's SET autocommit = 0): then it is not settled.
                if self._left_busy(raw):
                    self._went_busy(raw)
                else:
                    # (The adapter's word too: psycopg's pipeline mode is idle between
                    # statements but must never take the fast path; see its in_transaction.)
                    idle = self._adapter.in_transaction(raw) is False
                    if idle and state.blocks:
                        # No driver block is open on an idle session: a counted one
                        # was dropped unexited (psycopg ends its transaction then) or
                        # left past tether. Stale: it no longer makes a transaction.
                        state.blocks = 0
                    state.settled = self._unlimited and idle
            else:
                self._began(raw)

    def _began(self, raw: Any) -> None:
        """A statement outside autocommit mode answered on ``raw``: a transaction is open.

        Also the cursors' hot path for a session settled outside autocommit
        mode (MANUAL), whose first statement opens the transaction.
        """
        state = self._state
        state.commit_failed = False  # (see _answered)
        state.dirty = True
        state.settled = False
        adapter = self._adapter
        if adapter.sql_sets_autocommit and adapter.autocommit(raw):
            # SQL switched autocommit mode on (MySQL's SET autocommit = 1):
            # a setting kept at a reopen and given back at checkin, as the
            # other way round in _went_busy.
            state.touched = True

    def _went_busy(self, raw: Any) -> None:
        """An autocommit statement left the session busy.

        SQL opened a transaction (BEGIN), or ended autocommit mode.
        """
        state = self._state
        state.settled = False
        if not self._adapter.autocommit(raw):
            # SQL ended it: kept at a transparent reopen (_carried reads the
            # mode from the old session), given back at checkin.
            state.touched = True

    # -- transactions -----------------------------------------------------------------------

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        """Start a transaction: until commit or rollback, the connection is never replaced."""
        if not self.transaction_open():
            self._ready()
            self._ping_check(PING_ON_EXECUTE)
        state = self._state
        state.begun = True
        state.settled = False
        return self._adapter.begin(self._raw, *args, **kwargs)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        """Commit. A commit that fails is never retried: its outcome is unknown."""
        state = self._state
        raw, lost = self._raw, state.lost
        if state.commit_failed and not self._closed:
            # A commit failed with its session and no statement ran since: this one
            # must not report the success that one could not (rule 3), on whatever
            # session a cursor(), begin() or driver read opened meanwhile.
            raise SteadyDBError(
                "commit failed before, with the connection: whether it was applied is"
                " unknown, and a commit is never retried (call rollback() to go on)"
            )
        # Nothing to commit -- by the driver's state, or where it cannot tell (PyMySQL
        # outside autocommit) because no statement ran since the last commit or
        # rollback and nothing reached the driver connection past tether: then
        # nothing is sent. (PyMySQL would send COMMIT and fail on a session the
        # server ended meanwhile, though no work of the caller's was lost.)
        idle = not (args or kwargs or state.touched) and raw is not None
        idle = idle and not self.transaction_open()
        quiet = not (args or kwargs) and self._quiet_after()
        state.transaction_ended()
        if raw is None:
            # No session now: nothing ran since the last one ended (rolled back,
            # lost, or a checkout that starts on a connection to be reopened),
            # so there is nothing to commit (a failed commit raised above).
            if self._closed:
                raise SteadyDBError("the steady connection is closed")
            return None
        if idle:
            return None
        try:
            result = self._adapter.commit(raw, *args, **kwargs)
        except Exception as exc:
            if self._is_lost(raw, exc) or lost:
                if state.blocks:
                    # Inside a lent block (psycopg's transaction(), which forbids
                    # commit() itself): the block's transaction goes on, lost,
                    # until rollback() or the block's exit ends it. Found by an
                    # outside attack: the session was forgotten here, and the next
                    # statement of the still open block ran on a new session and
                    # autocommitted.
                    state.lost = True
                    raise
                self._forget(raw)
                state.commit_failed = True
            raise
        if lost:  # the driver let a commit on a dead session pass: the work is gone all the same
            self._forget(raw)
            state.commit_failed = True
            raise SteadyDBError(
                "commit failed: the connection was lost inside the transaction,"
                " so its work was rolled back by the server"
            )
        if quiet and self._adapter.in_transaction(raw) is not True:
            state.settled = MANUAL
        return result

    def rollback(self, *args: Any, **kwargs: Any) -> Any:
        """Roll back. On a lost connection that is what the server did already: no error."""
        state = self._state
        raw, lost = self._raw, state.lost
        quiet = not (args or kwargs) and self._quiet_after()
        state.transaction_ended()
        state.commit_failed = False
        if raw is None:
            return None
        try:
            result = self._adapter.rollback(raw, *args, **kwargs)
        except Exception as exc:
            if lost or self._is_lost(raw, exc):
                self._forget(raw)
                self._log.info(
                    "tether: rollback on a lost %s connection; the transaction ended with it",
                    self._adapter.name,
                )
                return None
            raise
        if lost:  # a session that must be retired (read-only now) rolls back fine: retire it
            self._forget(raw)
        elif quiet and self._adapter.in_transaction(raw) is not True:
            # (True inside psycopg's pipeline or transaction() blocks, which a
            # rollback() does not end.)
            state.settled = MANUAL
        return result

    def _quiet_after(self) -> bool:
        """Whether the commit or rollback about to end the transaction leaves the session
        known idle outside autocommit mode (:data:`~tether.steady.state.MANUAL`).

        Only where tether saw it all: its own statements ran outside
        autocommit mode (``dirty``, which a statement in autocommit mode never
        sets), nothing reached the driver past tether since (``touched``: an
        escape may switch the mode, or open what a rollback leaves open),
        no ``begin()`` (its adapter may change the mode for the block), the
        session not lost, and no usage limits (which the skipped checks test).
        """
        state = self._state
        return (
            state.dirty
            and not (state.touched or state.begun or state.lost or state.blocks)
            and self._unlimited
            and self._raw is not None
        )

    def _ended_with_session(self) -> None:
        """A driver method that ends the transaction (``tpc_commit()``...) failed: when the
        session is gone, the transaction ended with it and the next statement gets a new one."""
        raw = self._raw
        if raw is not None and (self._state.lost or self._adapter.is_closed(raw)):
            self._state.transaction_ended()
            self._forget(raw)

    def _block_exited(self) -> None:
        """A driver block lent through tether (psycopg's ``transaction()``...) was left.

        A session lost inside it in autocommit mode lost the block's work and
        nothing else: once no block of the driver's is open, the transaction it
        was has ended, as ``rollback()`` ends one, and the next statement gets a
        new connection (found by an outside attack: autocommit code, which never
        calls ``rollback()``, had every later statement fail).
        """
        state = self._state
        raw = self._raw
        if not state.lost or state.begun or state.blocks or raw is None:
            return
        if self._adapter.autocommit(raw):
            state.transaction_ended()
            state.commit_failed = False
            self._forget(raw)

    def _forget(self, raw: Any) -> None:
        """Drop a dead driver connection; the next operation opens a new one."""
        state = self._state
        state.lost = state.settled = False
        state.blocks = 0  # (see _drop: also when raw is no longer the current one)
        if self._raw is raw:
            self._drop(raw)
        self._adapter.close(raw)

    def _drop(self, raw: Any) -> None:
        """No driver connection from now on: ``raw`` is dead (the caller closes it).

        Its blocks went with it (a later exit of one is the old session's). A
        block still counted open reads as a transaction, and the next
        statement, told to stay on the session, read the missing connection:
        an AttributeError instead of a new session (found by outside attacks:
        after a rollback, and after a statement that may have been applied,
        with a block dropped unexited first).
        """
        self._raw, self._dead = None, raw
        self._state.blocks = 0

    # -- introspection ------------------------------------------------------------------------

    @property
    def adapter(self) -> DriverAdapter:
        """The driver adapter behind this connection."""
        return self._adapter

    def dbapi(self) -> ModuleType:
        """The DB-API 2 module of the driver (as DBUtils' ``dbapi()``)."""
        module = self._adapter.dbapi
        if module is None:
            raise AttributeError("could not determine the DB-API 2 module of the creator")
        return module

    def threadsafety(self) -> int:
        """The driver module's DB-API ``threadsafety`` (1 when it cannot be determined)."""
        value = self._adapter.threadsafety
        return 1 if value is None else value

    def __repr__(self) -> str:
        if self._raw is None:
            state = "closed" if self._closed else "to be reopened"
        elif self._state.lost:
            state = "lost in transaction"
        else:
            state = "in transaction" if self._state.begun or self._state.dirty else "idle"
        return f"<{type(self).__name__} {self._adapter.name} {state}, used {self._state.usage}x>"

    def __del__(self) -> None:
        try:
            self.retire()
        except Exception:
            pass


def _describe(exc: BaseException) -> str:
    """An exception as text for a log record.

    Never the exception object itself: a handler that keeps records (pytest,
    MemoryHandler, error trackers) would keep its traceback, and through its
    frames the connection, alive.
    """
    return f"{type(exc).__name__}: {exc}"
