"""Fork safety: a child process never uses a connection it inherited from its parent.

After ``os.fork()`` the child has copies of the parent's connection objects,
sharing the parent's sockets. If the child used one, parent and child would
interleave their messages on one session. If the child merely *closed* one,
it would end the parent's session: closing a psycopg or PyGreSQL connection
sends PostgreSQL a Terminate message, closing a PyMySQL connection sends
COM_QUIT -- on the socket the parent is still using. Even letting Python
garbage-collect the copy does that (libpq's ``PQfinish`` runs then).

So in the child (``os.register_at_fork(after_in_child=...)``) every pool
*abandons* all its inherited connections, idle or checked out:

1. the steady connection forgets its driver connection (and any
   transaction state), so if the child goes on using a proxy it inherited,
   the steady connection transparently opens a new connection of its own;
2. the driver connection's socket descriptor is pointed at ``/dev/null``
   with ``dup2`` -- in the child only; the parent's descriptor is untouched --
   so whatever the driver writes on it later (a Terminate on collection)
   goes nowhere;
3. the driver connection is kept referenced for the life of the child, so
   no finalizer runs on it before the process ends.

The pool itself starts over empty in the child: new lock, no waiters, no
maintenance thread until it is needed, counters at zero. Connections
inherited as checked out are dropped when the child gives them back.

Before the fork, the forking thread takes every pool's lock (held only for
list operations, so this waits a few microseconds at most), so the child
never sees a pool halfway through a change.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.steady import SteadyBase

    from .pool import Pool

__all__ = ["abandon", "register", "unregister"]

_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_locked: list[Pool] = []


def register(pool: Pool) -> None:
    """Make ``pool`` fork-safe (it stays registered until it is garbage-collected)."""
    _pools.add(pool)


def unregister(pool: Pool) -> None:
    """Nothing to do: a closed pool may still get connections back in a child."""


def abandon(con: SteadyBase) -> None:
    """Make the steady connection forget its driver connection without closing it."""
    con.abandon()


def _before() -> None:
    _locked[:] = list(_pools)
    for pool in _locked:
        pool._lock.acquire()


def _after_in_parent() -> None:
    for pool in _locked:
        pool._lock.release()
    _locked.clear()


def _after_in_child() -> None:
    for pool in _locked:
        pool._after_fork_in_child(abandon)
    _locked.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
