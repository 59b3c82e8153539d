"""What the pools under test connect to: a driver module plus its connect() keywords.

A :class:`Target` is one database as seen by one driver (sqlite3 on a file, or
psycopg on PostgreSQL), with the session settings every pool in a measurement
must share: autocommit on or off, an ``application_name`` (so the server's
connections of one pool can be counted) and, for the spike test, an
artificial connect delay. Every pool gets its new connections through
:meth:`Target.before_connect`, which counts them and applies the delay, so
"connections created" means the same thing for every pool.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["ConnectStats", "Target"]


class ConnectStats:
    """How many connections were opened through a target; whether connects are slow now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.created = 0
        #: The connect delay applies only while this is set (pools warm up fast).
        self.slow = False

    def count(self) -> None:
        with self._lock:
            self.created += 1

    def reset(self) -> None:
        with self._lock:
            self.created = 0


@dataclasses.dataclass
class Target:
    """A database reached through ``module.connect(**params)``."""

    kind: str  # "sqlite" or "postgresql"
    module: ModuleType
    params: dict[str, Any]
    autocommit: bool = True
    connect_delay: float = 0.0
    stats: ConnectStats = dataclasses.field(default_factory=ConnectStats)

    @property
    def label(self) -> str:
        return "sqlite3" if self.kind == "sqlite" else "PostgreSQL (psycopg)"

    @property
    def app_name(self) -> str | None:
        value = self.params.get("application_name")
        return str(value) if value is not None else None

    def variant(self, **changes: Any) -> Target:
        """A copy with some fields changed and its own connect counter."""
        params = dict(self.params)
        if "application_name" in changes:
            params["application_name"] = changes.pop("application_name")
        return dataclasses.replace(self, params=params, stats=ConnectStats(), **changes)

    def connect_kwargs(self) -> dict[str, Any]:
        """The keywords for ``module.connect()``, autocommit setting included."""
        kwargs = dict(self.params)
        if self.kind == "sqlite":
            # Connections move between threads in a pool; autocommit is isolation_level=None.
            kwargs["check_same_thread"] = False
            kwargs["isolation_level"] = None if self.autocommit else "DEFERRED"
        else:
            kwargs["autocommit"] = self.autocommit
        return kwargs

    def before_connect(self) -> None:
        """Count a new connection; sleep the connect delay when slow connects are on."""
        self.stats.count()
        if self.connect_delay and self.stats.slow:
            time.sleep(self.connect_delay)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """A new raw connection (counted, delayed when slow); extra keywords override."""
        self.before_connect()
        return self.module.connect(*args, **{**self.connect_kwargs(), **kwargs})

    def creator(self) -> Callable[[], Any]:
        """:meth:`connect` as a creator function that pools can identify the driver of.

        DBUtils reads ``creator.dbapi``; tether picks its driver adapter from
        ``creator.__module__``, so the function claims the driver's module.
        """
        target = self

        def connect(*args: Any, **kwargs: Any) -> Any:
            return target.connect(*args, **kwargs)

        connect.__module__ = self.module.__name__
        connect.dbapi = self.module  # type: ignore[attr-defined]
        connect.threadsafety = self.module.threadsafety  # type: ignore[attr-defined]
        return connect
