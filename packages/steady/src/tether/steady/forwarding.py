"""Passing a wrapped object's attributes through, without ``__getattr__``.

A steady connection, its cursors and a pool's proxies behave like the
driver's objects they wrap: every attribute they do not define themselves
is the wrapped object's (psycopg's ``info``, ``row_factory``, PyMySQL's
``select_db``...). The obvious way to pass them through is ``__getattr__``
(and ``__setattr__`` for assignments). It was measured to be the largest
single cost of tether's hot path on CPython 3.11, the project's default:

* CPython 3.11 specializes an attribute access (``self._raw``, a method
  lookup ``cur.execute``) only for classes whose attribute lookup is the
  generic one, and defining ``__getattr__`` replaces it. Every access on such
  an object, its own slots included, then takes the generic route: measured
  with callgrind, ~285 instructions more per attribute read and ~530 more per
  method call than on the same class without ``__getattr__`` (3.12 and 3.13
  specialize past a ``__getattr__``: no difference there).
* A request through tether.pooled (checkout, ``cursor()``, ``execute()``,
  ``fetchone()``, ``close()``, checkin) made about thirty such accesses:
  removing ``__getattr__``/``__setattr__`` from the three classes cut it from
  122,568 to 112,301 instructions (tether.steady alone: 106,036 to 98,887).

So each wrapper class gets, for each class of wrapped object, a subclass
(:func:`forwarding_class`) with one property per attribute name the wrapped
object has (its class's and, from the first instance seen, its instance's):
reading it calls the wrapper's ``_forward_get(name)``, assigning it
``_forward_set(name, value)``, where the wrapper's rules live (guarding a
driver method, remembering a setting for replay...). A wrapper instance is
moved to that subclass once the wrapped object is known. Names the wrapper
defines itself, and the ones in ``own`` (its instance state), are never
passed through. The limit of the scheme, and its price: a name the wrapped
object gains only after the wrapper first saw it (an attribute a driver
subclass sets in a later method call, a method patched onto the driver class
afterwards), unless the wrapper lists it in ``also``, is not passed through;
``dbapi_connection`` and ``dbapi_cursor`` reach the driver's object itself.
An attribute *assigned* on a wrapper under a name the driver object does not
have stays on the wrapper (the steady connection, a cursor or a pool's proxy:
a proxy's is gone with its checkout, so it never reaches the next borrower).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from tether.simple_pool import instance_dict

__all__ = ["forwarding_class", "set_class"]

#: ``obj.__class__ = cls`` past a wrapper's own ``__class__`` property (which
#: answers the driver's class for isinstance checks and cannot be assigned).
set_class = object.__dict__["__class__"].__set__

_classes: dict[tuple[type, type, frozenset[str] | None], type] = {}
#: Beyond this many classes, new ones are made but not kept (a bound, not a cache policy).
_MAX_CLASSES = 256
_lock = threading.Lock()


def _property(name: str) -> property:
    def get(self: Any) -> Any:
        return self._forward_get(name)

    def put(self: Any, value: Any) -> None:
        self._forward_set(name, value)

    get.__name__ = put.__name__ = name
    return property(get, put, doc=f"The wrapped object's ``{name}``.")


def forwarding_class(
    wrapper: type, wrapped: Any, own: Collection[str] = (), also: Collection[str] = ()
) -> type:
    """``wrapper``'s subclass that passes ``wrapped``'s attributes through (one per class pair).

    ``own``: names of the wrapper's instance state, never passed through (a
    wrapper without ``__slots__`` keeps its state in its ``__dict__``, which a
    property of the same name would hide). ``also``: names passed through
    even if ``wrapped`` does not have them yet (a driver that sets an
    attribute only later: PyMySQL's cursor gets ``lastrowid`` at its first
    ``execute()``); reading one the driver never sets raises its
    AttributeError, as on the driver's own object. The subclass has the wrapper's
    name and adds no instance layout (``__slots__ = ()``), so an instance can
    be moved to it with :data:`set_class`.
    """
    # The wrapped object's own attribute names are part of the key: a creator or
    # an on_connect that sets one (``conn.tenant = ...``) gets a class with it.
    # (instance_dict: a plain vars() would slow every later attribute read of it.)
    own_names = instance_dict(wrapped)
    key = (wrapper, type(wrapped), frozenset(own_names) if own_names is not None else None)
    cls = _classes.get(key)
    if cls is not None:
        return cls
    namespace: dict[str, Any] = {"__slots__": (), "__module__": wrapper.__module__}
    for name in set(dir(type(wrapped))) | set(dir(wrapped)) | set(also):
        if name[:2] == "__" and name[-2:] == "__":
            continue  # the wrapper's own protocol (repr, enter/exit, pickling...)
        if name.startswith("_tether") or name in own or hasattr(wrapper, name):
            continue
        namespace[name] = _property(name)
    namespace["_forwards"] = type(wrapped)
    made = type(wrapper.__name__, (wrapper,), namespace)
    made.__qualname__ = wrapper.__qualname__
    with _lock:
        if len(_classes) >= _MAX_CLASSES:  # wrapped objects whose names keep changing
            return made
        return _classes.setdefault(key, made)
