"""PoolOptions: every setting of a pool, checked once, in one read-only value.

``PooledDB(...)`` and ``PooledPg(...)`` turn their arguments into a
:class:`PoolOptions` before they open anything, and the pool keeps it as
``pool.options``; ``PooledDB.from_options(creator, options, *args,
**kwargs)`` makes a pool from one. The settings of the pool's steady
connections (``maxusage``, ``setsession``, ``failures``, ``ping``,
``isfatal``, ``on_connect``, ``logger``) are a
:class:`tether.steady.SteadyOptions` in ``options.steady``: one object,
checked by steady's own checks, which the pool hands to every connection it
opens. The pool uses two of them itself: ``steady.ping`` (whether a checkout
checks an idle connection) and ``steady.logger``.

What the object is (read-only, a value, a repr without secrets, ``replace()``)
is :class:`tether.steady.Options`'s; what each setting means is
:class:`tether.pooled.PooledDB`'s docstring and the package README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.simple_pool.checks import (
    check_bool,
    check_callable,
    check_count,
    check_int,
    check_seconds,
    check_seconds_pair,
    check_str,
)
from tether.steady import Options, SteadyOptions

from .events import EventHook
from .reset import check_reset

__all__ = ["PoolOptions"]

#: The steady settings of a pool that was given none: its connections are not
#: closeable (``close()`` gives a pooled connection back), everything else is
#: steady's default.
POOL_STEADY = SteadyOptions(closeable=False)


class PoolOptions(Options):
    """The settings of a :class:`~tether.pooled.PooledDB` or :class:`~tether.pooled.PooledPg`.

    Keyword-only, with the defaults of ``PooledDB``'s signature. ``reset`` is
    True (None and False mean the same: an open transaction is always rolled
    back), a callable, or for ``PooledPg`` one of its ints; the pool combines
    it with ``reset_session``. ``steady.closeable`` is always False (a pool's
    connections go back to it), and ``steady.max_lifetime`` must be None: the
    pool's own ``max_lifetime`` retires connections between checkouts.
    """

    _fields = (
        "mincached", "maxcached", "maxshared", "maxconnections", "blocking", "reset",
        "reset_session", "checkout_timeout", "max_lifetime", "max_idle", "max_waiting",
        "max_connecting", "leak_threshold", "validate_interval", "ping_after",
        "reconnect_backoff", "on_event", "name", "steady",
    )  # fmt: skip
    __slots__ = _fields

    mincached: int
    maxcached: int
    maxshared: int
    maxconnections: int
    blocking: bool
    reset: bool | int | Callable[[Any], object] | None
    reset_session: bool
    checkout_timeout: float
    max_lifetime: float | None
    max_idle: float | None
    max_waiting: int
    max_connecting: int
    leak_threshold: float | None
    validate_interval: float | None
    ping_after: float
    reconnect_backoff: tuple[float, float]
    on_event: EventHook | None
    name: str | None
    steady: SteadyOptions

    def __init__(
        self,
        *,
        mincached: int | None = 0,
        maxcached: int | None = 0,
        maxshared: int | None = 0,
        maxconnections: int | None = 0,
        blocking: bool = False,
        reset: bool | int | Callable[[Any], object] | None = True,
        reset_session: bool = False,
        checkout_timeout: float = 30.0,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        max_waiting: int = 0,
        max_connecting: int = 2,
        leak_threshold: float | None = None,
        validate_interval: float | None = None,
        ping_after: float = 1.0,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
        on_event: EventHook | None = None,
        name: str | None = None,
        steady: SteadyOptions = POOL_STEADY,
    ) -> None:
        if not isinstance(steady, SteadyOptions):
            raise TypeError(f"steady: expected SteadyOptions, got {type(steady).__name__}")
        if steady.max_lifetime is not None:
            # A pool retires old connections itself, between checkouts: one setting.
            raise ValueError(
                "steady: max_lifetime is the pool's own (PoolOptions.max_lifetime),"
                " not its steady connections'"
            )
        self._set("mincached", check_count("mincached", mincached))
        self._set("maxcached", check_count("maxcached", maxcached))
        self._set("maxshared", check_count("maxshared", maxshared))
        self._set("maxconnections", check_count("maxconnections", maxconnections))
        self._set("blocking", check_bool("blocking", blocking))
        self._set("reset", check_reset(reset))  # None and False: True (reset.py)
        self._set("reset_session", check_bool("reset_session", reset_session))
        self._set(
            "checkout_timeout",
            check_seconds("checkout_timeout", checkout_timeout, allow_none=False),
        )
        self._set("max_lifetime", check_seconds("max_lifetime", max_lifetime))
        self._set("max_idle", check_seconds("max_idle", max_idle))
        self._set("max_waiting", check_count("max_waiting", max_waiting))
        self._set("max_connecting", check_int("max_connecting", max_connecting, minimum=1))
        self._set("leak_threshold", check_seconds("leak_threshold", leak_threshold))
        self._set("validate_interval", check_seconds("validate_interval", validate_interval))
        self._set(
            "ping_after",
            check_seconds("ping_after", ping_after, allow_none=False, allow_zero=True),
        )
        self._set("reconnect_backoff", check_seconds_pair("reconnect_backoff", reconnect_backoff))
        self._set("on_event", check_callable("on_event", on_event))
        self._set("name", check_str("name", name))
        self._set("steady", steady.replace(closeable=False) if steady.closeable else steady)

    def extras(self) -> dict[str, Any]:
        """The keyword-only arguments of ``PooledDB``/``PooledPg`` these options give.

        What ``from_options`` passes besides DBUtils' positional arguments:
        tether's pool extras, and the steady settings both fronts take by keyword.
        """
        steady = self.steady
        return {
            "checkout_timeout": self.checkout_timeout,
            "max_lifetime": self.max_lifetime,
            "max_idle": self.max_idle,
            "max_waiting": self.max_waiting,
            "max_connecting": self.max_connecting,
            "reset_session": self.reset_session,
            "leak_threshold": self.leak_threshold,
            "validate_interval": self.validate_interval,
            "ping_after": self.ping_after,
            "reconnect_backoff": self.reconnect_backoff,
            "on_connect": steady.on_connect,
            "on_event": self.on_event,
            "logger": steady.logger,
            "name": self.name,
        }
