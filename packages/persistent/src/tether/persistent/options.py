"""PersistentOptions: every setting of a persistent generator, checked once, read-only.

``PersistentDB(...)`` and ``PersistentPg(...)`` turn their arguments into a
:class:`PersistentOptions` before anything is opened and keep it as
``generator.options``; ``PersistentDB.from_options(creator, options, *args,
**kwargs)`` makes a generator from one. What each thread's steady
connection gets (``maxusage``, ``setsession``, ``failures``, ``ping``,
``closeable``, ``isfatal``, ``max_lifetime``, ``on_connect``, ``logger``) is
a :class:`tether.steady.SteadyOptions` in ``options.steady``, checked by
steady's own checks; the generator uses ``steady.logger`` and
``steady.ping`` itself too. What the object is (read-only, a value, a repr
without secrets, ``replace()``) is :class:`tether.steady.Options`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.simple_pool.checks import check_bool, check_count, check_seconds
from tether.steady import Options, SteadyOptions

__all__ = ["PersistentOptions"]

#: The steady settings of a generator given none: DBUtils' PersistentDB
#: defaults (``close()`` does not close, ``ping`` 1).
PERSISTENT_STEADY = SteadyOptions(closeable=False)


class PersistentOptions(Options):
    """The settings of a :class:`~tether.persistent.PersistentDB` or ``PersistentPg``.

    Keyword-only, with the defaults of ``PersistentDB``'s signature:
    ``maxconnections``, ``blocking``, ``checkout_timeout``, ``ping_after``,
    ``threadlocal`` (the class of the thread-local store, None for
    :class:`threading.local`) and ``steady``.
    """

    _fields = (
        "maxconnections", "blocking", "checkout_timeout", "ping_after", "threadlocal", "steady",
    )  # fmt: skip
    __slots__ = _fields

    maxconnections: int
    blocking: bool
    checkout_timeout: float
    ping_after: float
    threadlocal: Callable[[], Any] | None
    steady: SteadyOptions

    def __init__(
        self,
        *,
        maxconnections: int | None = 0,
        blocking: bool = False,
        checkout_timeout: float = 30.0,
        ping_after: float = 1.0,
        threadlocal: Callable[[], Any] | None = None,
        steady: SteadyOptions = PERSISTENT_STEADY,
    ) -> None:
        if not isinstance(steady, SteadyOptions):
            raise TypeError(f"steady: expected SteadyOptions, got {type(steady).__name__}")
        self._set("maxconnections", check_count("maxconnections", maxconnections))
        self._set("blocking", check_bool("blocking", blocking))
        self._set(
            "checkout_timeout",
            check_seconds("checkout_timeout", checkout_timeout, allow_none=False),
        )
        self._set(
            "ping_after",
            check_seconds("ping_after", ping_after, allow_none=False, allow_zero=True),
        )
        if threadlocal is not None and not callable(threadlocal):
            raise TypeError(
                "threadlocal: expected a class like threading.local, or None,"
                f" got {type(threadlocal).__name__}"
            )
        self._set("threadlocal", threadlocal)
        self._set("steady", steady)

    def extras(self) -> dict[str, Any]:
        """The keyword-only arguments of ``PersistentDB``/``PersistentPg`` these options give.

        What ``from_options`` passes besides DBUtils' positional arguments.
        """
        steady = self.steady
        return {
            "maxconnections": self.maxconnections,
            "blocking": self.blocking,
            "checkout_timeout": self.checkout_timeout,
            "ping_after": self.ping_after,
            "max_lifetime": steady.max_lifetime,
            "on_connect": steady.on_connect,
            "logger": steady.logger,
        }
