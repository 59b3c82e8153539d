"""What tether knows about one driver session, in one object.

A steady connection must know, before every statement, whether it may
replace its driver connection (only outside a transaction), whether it needs
to look at the driver at all (not when the last statement left the session
idle in autocommit mode a moment ago), and, when a borrower gives it back,
what to undo. All of that is :class:`SessionState`: one slotted object per
steady connection, read and written by tether.steady alone. The pools above
never read it; they ask the steady connection's layer API
(:meth:`~tether.steady.SteadyBase.transaction_open`,
:meth:`~tether.steady.SteadyBase.needs_reset`...).

Two transitions matter more than the rest, so each is one method:

* :meth:`SessionState.unknown`: something reached the driver connection past
  tether (a driver method or attribute through the proxies, the raw
  connection itself, a driver cursor method, an assignment). Its transaction
  state must be read again, and its settings compared with the configured
  ones when the borrower gives it back. Every escape goes through here.
* :meth:`SessionState.new_session`: a new driver connection replaced the old
  one (or none is left): nothing of the old session's state carries over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MANUAL", "SessionState"]

#: :attr:`SessionState.settled` for a session idle *outside* autocommit mode:
#: tether's own commit or rollback just ended what its statements had begun.
#: Truthy, so every ``if state.settled`` that means "idle, nothing open" holds
#: for it too; the cursors' hot paths, which also assume autocommit mode, test
#: ``settled is not True`` and so never take it. Every place that clears
#: ``settled`` (an escape, a statement, a reopen, a failure) clears it as well:
#: one slot, not a second flag to keep in step.
MANUAL = 2


class SessionState:
    """The state of one steady connection's session (see the module docstring)."""

    __slots__ = (
        "alive_at", "begun", "blocks", "commit_failed", "configured", "dirty", "generation",
        "lease", "lost",
        "native", "opened_at", "replay", "settled", "spoiled", "touched", "usage",
    )  # fmt: skip

    def __init__(self) -> None:
        #: Inside ``begin()``, until commit or rollback.
        self.begun = False
        #: Driver blocks lent through tether (``with db.transaction():``, ``with
        #: db.pipeline():``, a cursor's ``copy()``) entered and not left yet.
        self.blocks = 0
        #: A statement ran on a non-autocommit connection since the last commit
        #: or rollback; used where the driver cannot tell whether a transaction is open.
        self.dirty = False
        #: The connection broke inside a transaction; kept, dead, until the
        #: transaction ends, so that every statement of it fails.
        self.lost = False
        #: A commit failed with its session, which was dropped: whether it was
        #: applied is unknown, so a commit() repeated before rollback(), the next
        #: statement or the end of the checkout raises rather than report success.
        #: A new session alone does not clear it: ``cursor()``, ``begin()`` or a
        #: driver attribute read reopen, and a commit after them reported success
        #: (fifth outside attack).
        self.commit_failed = False
        #: The last statement left the session idle in autocommit mode and
        #: nothing but tether's own statements has reached the driver since:
        #: within ``ALIVE_BYPASS`` the next statement skips every check.
        #: :data:`MANUAL` instead of True: idle outside autocommit mode, known
        #: from tether's own commit or rollback (the next statement skips the
        #: driver reads, not the bookkeeping of a transaction it begins).
        self.settled: bool | int = False
        #: When the session was last seen alive (opened, or a statement answered).
        self.alive_at = 0.0
        #: When the driver connection was opened (for ``max_lifetime``).
        self.opened_at = 0.0
        #: Statements run on this driver connection (for ``maxusage``).
        self.usage = 0
        #: Bumped when the driver connection is replaced and when a checkout
        #: ends: a cursor made before cannot take the fast path.
        self.generation = 0
        #: Ended checkouts: a cursor made during one refuses to work after it.
        self.lease = 0
        #: Something reached the driver connection past tether since the last
        #: ended checkout: its settings may differ from the configured ones.
        self.touched = False
        #: Session settings made through tether on the driver connection, by
        #: name: replayed on every new driver connection until the checkout ends.
        self.replay: dict[str, Callable[[Any], object]] = {}
        #: The driver connection's configuration as the pool's setup left it
        #: (the adapter's ``configuration()`` snapshot), put back at checkin.
        self.configured: Any = None
        #: A driver method whose effect cannot be undone was reached during
        #: this checkout (the adapter's ``unrestorable``): the session ends with it.
        self.spoiled = False
        #: The class of a plain ``cursor()`` on this driver connection: a native
        #: steady cursor class (native.py), False for the wrapper, None until known.
        #: Forgotten whenever the driver connection may have changed past tether
        #: (its ``cursor_factory`` assigned): unknown(), new_session(), a checkin's restore.
        self.native: Any = None

    def unknown(self) -> None:
        """The driver connection is used past tether: read its state again, compare at checkin."""
        self.settled = False
        self.touched = True
        self.native = None

    def transaction_ended(self) -> None:
        """A commit or rollback ended whatever was open."""
        self.begun = self.dirty = self.settled = False

    def new_session(self, now: float | None) -> None:
        """A new driver connection (opened at ``now``) replaced the old one, or none is left.

        ``now`` None: no driver connection now (closed, lost, abandoned after fork).
        """
        self.begun = self.dirty = self.lost = self.settled = False
        self.spoiled = False
        self.blocks = 0
        self.configured = None
        self.native = None
        if now is not None:
            self.usage = 0
            self.generation += 1
            self.opened_at = self.alive_at = now

    def __repr__(self) -> str:
        names = ("begun", "dirty", "lost", "settled", "spoiled", "touched")
        flags = [name for name in names if getattr(self, name)]
        return f"<SessionState {' '.join(flags) or 'idle'}, used {self.usage}x>"
