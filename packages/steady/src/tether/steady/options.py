"""Options objects: a layer's settings, checked once, in one read-only value.

Every front of tether (``SteadyDBConnection``, ``PooledDB``,
``PersistentDB``...) takes DBUtils' positional arguments and tether's
keyword-only extras, and turns them into one options object before it opens
anything: :class:`SteadyOptions` here, ``tether.pooled.PoolOptions`` and
``tether.persistent.PersistentOptions`` above. The options object is the one
place where a setting's default, its check (:mod:`tether.simple_pool.checks`,
so the same error message in every layer) and its stored value live; the
signatures are thin forwarders that keep DBUtils' argument order and give
type checkers and editors the names.

An options object is:

* **checked**: constructing one runs every check, so a bad value fails there,
  with ``TypeError``/``ValueError`` naming the parameter;
* **read-only and slotted**: assigning to it raises ``AttributeError``; a
  changed copy is :meth:`Options.replace`, which checks again;
* **a value**: equal when every field is equal, hashable;
* **safe to print**: its repr shows no SQL of ``setsession`` (a statement may
  set a secret), only how many statements there are. Connect arguments,
  where passwords are, are never part of an options object.

What an options object holds is how the layer behaves, not what it connects
to: the creator, the connect arguments and the ``driver`` choice stay
arguments of the front (``from_options(creator, options, *args, **kwargs)``).

A pool, a persistent generator and a steady connection made by either keep
theirs as ``.options`` (read-only; a steady connection's is
``steady_options``, since ``options`` is a PyGreSQL connection attribute the
steady connection passes through).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from tether.simple_pool.checks import (
    FailuresSpec,
    check_bool,
    check_callable,
    check_count,
    check_failures,
    check_logger,
    check_seconds,
    check_setsession,
)

from .ping import PingSpec, check_ping

__all__ = ["Options", "SteadyOptions"]

_O = TypeVar("_O", bound="Options")


class Options:
    """The base of every layer's options: read-only, slotted, a value, a repr without secrets.

    A subclass lists its fields in ``_fields`` (in the order of the
    layer's DBUtils signature), has a slot for each, and sets each once in
    ``__init__`` with :meth:`_set`, after checking it.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _set(self, name: str, value: Any) -> None:
        try:
            getattr(self, name)
        except AttributeError:  # not set yet: the one time a field is written
            object.__setattr__(self, name, value)
        else:  # __init__ called again on a made object: it is read-only too
            raise AttributeError(f"{type(self).__name__} is read-only")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"{type(self).__name__} is read-only: make a changed copy with replace({name}=...)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def as_dict(self) -> dict[str, Any]:
        """The fields as keyword arguments of the class: ``type(o)(**o.as_dict()) == o``."""
        return {name: getattr(self, name) for name in self._fields}

    def replace(self: _O, **changes: Any) -> _O:
        """A copy with ``changes`` applied, checked as a new object is."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise TypeError(f"{type(self).__name__}.replace(): no option named {unknown[0]!r}")
        return type(self)(**{**self.as_dict(), **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Options) or type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.as_dict().values())))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={_shown(name, value)}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A hook or a logger may not pickle; the object itself does when its fields do.
        return (_rebuild, (type(self), self.as_dict()))


def _rebuild(cls: type[_O], fields: dict[str, Any]) -> _O:
    return cls(**fields)


def _shown(name: str, value: Any) -> str:
    if name == "setsession":
        return f"<{len(value)} statement{'' if len(value) == 1 else 's'}>"
    if isinstance(value, logging.Logger):
        return f"<logger {value.name!r}>"
    if callable(value) and not isinstance(value, type):
        # By name only: a partial's or a closure's arguments may be secrets.
        return f"<{getattr(value, '__qualname__', type(value).__name__)}>"
    if isinstance(value, tuple) and any(callable(v) for v in value):  # ping's (when, how)
        return f"({', '.join(_shown('', v) for v in value)})"
    return repr(value)


class SteadyOptions(Options):
    """What a steady connection does besides connecting: DBUtils' SteadyDB arguments.

    ``maxusage`` (statements before the connection is reopened; 0 or None: no
    limit), ``setsession`` (SQL run on every new connection, kept as a
    tuple), ``failures`` (the exception classes that mean "connection lost"),
    ``ping`` (when and how liveness is checked, see :mod:`tether.steady.ping`),
    ``closeable`` (whether ``close()`` closes; a pool's connections are not),
    ``isfatal`` (a callable telling a lost connection from a failed
    statement), ``max_lifetime`` (seconds before a reopen between
    transactions), ``on_connect`` (called with each new driver connection)
    and ``logger``.
    """

    _fields = (
        "maxusage", "setsession", "failures", "ping", "closeable", "isfatal", "max_lifetime",
        "on_connect", "logger",
    )  # fmt: skip
    __slots__ = _fields

    maxusage: int
    setsession: tuple[str, ...]
    failures: FailuresSpec | None
    ping: PingSpec
    closeable: bool
    isfatal: Callable[[BaseException], bool] | None
    max_lifetime: float | None
    on_connect: Callable[[Any], object] | None
    logger: logging.Logger | None

    def __init__(
        self,
        *,
        maxusage: int | None = None,
        setsession: Sequence[str] | None = None,
        failures: FailuresSpec | None = None,
        ping: PingSpec = 1,
        closeable: bool = True,
        isfatal: Callable[[BaseException], bool] | None = None,
        max_lifetime: float | None = None,
        on_connect: Callable[[Any], object] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._set("maxusage", check_count("maxusage", maxusage))
        self._set("setsession", check_setsession(setsession))
        self._set("failures", check_failures(failures))
        self._set("ping", check_ping(ping))
        self._set("closeable", check_bool("closeable", closeable))
        self._set("isfatal", check_callable("isfatal", isfatal))
        self._set("max_lifetime", check_seconds("max_lifetime", max_lifetime))
        self._set("on_connect", check_callable("on_connect", on_connect))
        self._set("logger", check_logger(logger))
