"""Objects that stand for a live database session are never copied or pickled.

A pool's connection proxy, a cursor, a steady connection, a pool: each
holds one driver connection (or many) and the bookkeeping that keeps it
safe. ``copy.copy()`` would make a second object around the *same* session
that knows nothing of the first one's checkout: closing the original gives
the session back to the pool, and the copy then runs on the next borrower's
session (found by an outside attack: a copied proxy committed another
borrower's transaction). A pickle cannot carry a socket at all, and a
deep copy would try to copy the driver module.

So each of these classes refuses, with one clear ``TypeError``: copying
goes through ``__reduce_ex__`` (``copy.copy``, ``copy.deepcopy`` and
``pickle`` all call it when a class defines no ``__copy__``), so that is
the one method to define.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["Uncopyable"]


class Uncopyable:
    """A mixin: ``copy.copy()``, ``copy.deepcopy()`` and ``pickle`` raise ``TypeError``."""

    __slots__ = ()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(
            f"a {type(self).__name__} cannot be copied or pickled: it stands for live"
            " database sessions, which a copy would share without knowing how the original"
            " uses them; take another connection (or cursor) instead"
        )
