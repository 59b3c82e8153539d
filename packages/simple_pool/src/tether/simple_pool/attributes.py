"""Reading a driver object's instance attributes without slowing the object down.

tether reads a driver connection's instance dict in a few places: to pass
its attributes through (tether.steady's forwarding classes), to see how a
driver configured a connection (PyMySQL's timeouts), to find a pg.DB's
libpq connection. The obvious ``vars(conn)`` has a price on CPython 3.11
and 3.12 that is paid long after, on every attribute read of that object:

An instance keeps its attributes inline, without a dict, until something
reads its ``__dict__``; the dict made then is a "split" one, which the
specialised attribute reads cannot use, so from then on every ``self.x`` in
the driver's own methods, and every ``raw.x`` of tether's, takes the generic
lookup. Measured with callgrind, per loop iteration: a read of a psycopg
connection's ``pgconn`` 273 instructions, 542 once its ``__dict__`` had
been read, 290 with :func:`instance_dict`'s fix (3.11.7); four attribute
reads of a plain class's instance 517 / 1,576 / 585 (3.11), 620 / 1,815 /
708 (3.12.1), 623 / 623 / 710 (3.13.0); a request through tether.steady
(psycopg, ``SELECT 1``, 3.11) 98,404 -> 95,389 instructions.

The fix: the dict that was read is replaced by an equal ordinary one,
which the specialised reads do use. CPython 3.13 keeps the attributes
inline after a ``__dict__`` read, and there the replacement would cost:
it is made only before 3.13.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["instance_dict"]

#: Whether reading an instance's ``__dict__`` slows every later attribute read of it.
_DICT_READ_SLOWS = sys.version_info < (3, 13)


def instance_dict(obj: Any) -> dict[str, Any] | None:
    """``obj``'s instance dict (None: it has none), read at no lasting cost to ``obj``.

    Layer API. Read it, don't keep it: a later attribute set on ``obj`` may
    go to a dict this function has not returned.
    """
    attributes = getattr(obj, "__dict__", None)
    if type(attributes) is not dict:  # none, or a class's mappingproxy
        return None
    if _DICT_READ_SLOWS:
        try:
            attributes = dict(attributes)
            # (past a class's own __setattr__: pg.DB passes attributes to its connection)
            object.__setattr__(obj, "__dict__", attributes)
        except (AttributeError, TypeError):  # a class that does not let it be replaced
            pass
    return attributes
