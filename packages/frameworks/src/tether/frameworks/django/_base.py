"""What both Django backends share: one tether pool per database, checkouts as Django connections.

Django keeps one ``DatabaseWrapper`` per thread and database alias, and
calls ``connect()`` (``get_new_connection``) when a thread first needs the
database and ``close()`` when the connection is obsolete (at the end of a
request with ``CONN_MAX_AGE = 0``). Here ``get_new_connection`` takes a
tether connection instead of opening one, and ``close()`` gives it back:

* ``"pool": "pooled"``: a checkout of a process-wide
  :class:`~tether.pooled.PooledDB` for this database;
* ``"pool": "persistent"``: the calling thread's connection of a
  process-wide :class:`~tether.persistent.PersistentDB`.

The session setup Django does on a new connection (time zone, role,
isolation level, ``SQL_AUTO_IS_NULL``, autocommit) is done by tether's
``on_connect`` on every new *driver* connection instead, so it is also done
on a connection tether opens transparently after a server restart, and it
costs no round trip per request. The autocommit mode a reopened connection
gets is the one the Django connection of the thread that reopened it is in
(Django turns autocommit off at the start of ``atomic()``: a connection
reopened before the block's first statement must be opened in that state).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper

from tether.persistent import PersistentDB
from tether.persistent import TooManyConnectionsError as PersistentTooMany
from tether.pooled import DatabaseUnreachable, PooledDB
from tether.pooled import TooManyConnectionsError as PooledTooMany
from tether.simple_pool.errors import PoolClosed, PoolTimeout

__all__ = ["POOL_MODES", "TetherWrapperMixin", "close_pools", "pools"]

log = logging.getLogger("tether.frameworks.django")

POOL_MODES = ("persistent", "pooled")
_FULL = (PoolTimeout, PooledTooMany, PersistentTooMany, PoolClosed, DatabaseUnreachable)


class _Holder:
    """One database's tether pool, shared by every thread's ``DatabaseWrapper`` of an alias."""

    def __init__(
        self,
        alias: str,
        mode: str,
        generator: PooledDB[Any] | PersistentDB[Any],
        local: threading.local,
    ) -> None:
        self.alias = alias
        self.mode = mode
        self.generator = generator
        self.local = local  # .wrapper: weak reference to the thread's DatabaseWrapper

    def checkout(self) -> Any:
        generator = self.generator
        if isinstance(generator, PooledDB):
            return generator.dedicated_connection()
        return generator.connection()

    def close(self) -> None:
        self.generator.close()


_holders: dict[tuple[Any, ...], _Holder] = {}
_holders_lock = threading.Lock()


def pools() -> dict[str, PooledDB[Any] | PersistentDB[Any]]:
    """The tether pools (``PooledDB``) or generators (``PersistentDB``) in use, by alias."""
    with _holders_lock:
        return {holder.alias: holder.generator for holder in _holders.values()}


def close_pools(alias: str | None = None) -> None:
    """Close the tether pools of ``alias`` (all when None): at shutdown, or between tests.

    Connections in use are closed when they are given back. A later
    ``connect()`` of the alias creates a new pool.
    """
    with _holders_lock:
        keys = [key for key, holder in _holders.items() if alias in (None, holder.alias)]
        closing = [_holders.pop(key) for key in keys]
    for holder in closing:
        holder.close()


def _options(settings_dict: dict[str, Any]) -> dict[str, Any]:
    tether = settings_dict.get("OPTIONS", {}).get("tether", {})
    if tether is None:
        tether = {}
    if not isinstance(tether, dict):
        raise ImproperlyConfigured(
            f"DATABASES OPTIONS['tether'] must be a dict, got {type(tether).__name__}"
        )
    return dict(tether)


class TetherWrapperMixin:
    """Mixed into Django's ``DatabaseWrapper`` of a backend (before it in the bases)."""

    # Set by the concrete backend:
    #: Apply Django's per-connection session setup to a new driver connection.
    # (self = any wrapper of the alias, used for its settings only.)
    def _tether_prepare(self, raw: Any, autocommit: bool) -> None:
        raise NotImplementedError

    def _tether_apply_autocommit(self, raw: Any, autocommit: bool) -> None:
        raise NotImplementedError

    # Attributes of BaseDatabaseWrapper this mixin uses (for the type checker).
    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    autocommit: bool
    Database: Any

    @property
    def _tether_enabled(self) -> bool:
        # Django's connection to the maintenance database ("postgres"), made
        # for CREATE DATABASE and the like, is a plain driver connection.
        return self.alias != str(NO_DB_ALIAS)

    # -- get_connection_params / get_new_connection ----------------------------------------

    def _tether_connection_params(self, params: dict[str, Any]) -> dict[str, Any]:
        params.pop("tether", None)
        return params

    def _tether_holder(self, connect: Callable[..., Any], params: dict[str, Any]) -> _Holder:
        options = _options(self.settings_dict)
        mode = options.pop("pool", "pooled")
        if mode not in POOL_MODES:
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']['tether']['pool'] must be one of"
                f" {', '.join(map(repr, POOL_MODES))}, got {mode!r}"
            )
        settings = self.settings_dict
        key = (
            self.alias,
            type(self).__module__,
            mode,
            settings.get("NAME"),
            settings.get("HOST"),
            settings.get("PORT"),
            settings.get("USER"),
            repr(sorted(options.items(), key=lambda item: item[0])),
        )
        holder = _holders.get(key)
        if holder is not None:
            return holder
        with _holders_lock:
            holder = _holders.get(key)
            if holder is None:
                holder = self._tether_new_holder(mode, options, connect, params)
                _holders[key] = holder
            return holder

    def _tether_new_holder(
        self,
        mode: str,
        options: dict[str, Any],
        connect: Callable[..., Any],
        params: dict[str, Any],
    ) -> _Holder:
        health_checks = bool(self.settings_dict.get("CONN_HEALTH_CHECKS"))
        # No round trip per request unless asked for: Django's CONN_HEALTH_CHECKS
        # asks tether to check the connection when a request takes it.
        options.setdefault("ping", 1 if health_checks else 0)
        if mode == "pooled":
            options.setdefault("blocking", True)
            if health_checks:
                options.setdefault("ping_after", 0.0)
            options.setdefault("name", f"django-{self.alias}")
        user_on_connect = options.pop("on_connect", None)
        if user_on_connect is not None and not callable(user_on_connect):
            raise ImproperlyConfigured("OPTIONS['tether']['on_connect'] must be a callable")
        default_autocommit = bool(self.settings_dict.get("AUTOCOMMIT", True))
        local = threading.local()
        template = self  # used for its settings only: the same for every thread

        def prepare(raw: Any) -> None:
            ref = getattr(local, "wrapper", None)
            wrapper = ref() if ref is not None else None
            if wrapper is not None and wrapper.connection is not None:
                autocommit = bool(wrapper.autocommit)
            else:  # not in use by a Django connection yet: Django sets it at connect()
                autocommit = default_autocommit
            template._tether_prepare(raw, autocommit)
            if user_on_connect is not None:
                user_on_connect(raw)

        creator = functools.partial(connect, **params)
        generator: PooledDB[Any] | PersistentDB[Any]
        try:
            if mode == "pooled":
                generator = PooledDB(creator, on_connect=prepare, **options)
            else:
                generator = PersistentDB(creator, on_connect=prepare, **options)
        except TypeError as exc:
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}] OPTIONS['tether']: {exc}"
            ) from exc
        log.debug("tether: %s pool for database %r: %r", mode, self.alias, generator)
        return _Holder(self.alias, mode, generator, local)

    def _tether_checkout(self, connect: Callable[..., Any], params: dict[str, Any]) -> Any:
        holder = self._tether_holder(connect, params)
        holder.local.wrapper = weakref.ref(self)
        try:
            return holder.checkout()
        except _FULL as exc:
            # Django's callers catch its OperationalError: give them one.
            raise self.Database.OperationalError(
                f"tether: no connection for database {self.alias!r}: {exc}"
            ) from exc

    # -- Django's per-connection hooks ---------------------------------------------------------

    def init_connection_state(self) -> None:
        if not self._tether_enabled:
            super().init_connection_state()  # type: ignore[misc]
            return
        # The session setup runs in tether's on_connect, once per driver
        # connection; what is left is Django's one-time version check.
        BaseDatabaseWrapper.init_connection_state(self)

    def _set_autocommit(self, autocommit: bool) -> None:
        if not self._tether_enabled:
            super()._set_autocommit(autocommit)  # type: ignore[misc]
            return
        con = self.connection
        raw = con.dbapi_connection
        if raw is None:  # dropped after a failure: the reopen applies self.autocommit
            return
        adapter = con.adapter
        if adapter.is_closed(raw) or adapter.peer_closed(raw):
            # The server ended the session since the last request. Changing
            # autocommit would fail; the connection is reopened by the next
            # statement, outside any transaction, in this mode.
            adapter.close(raw)
            return
        with self.wrap_database_errors:  # type: ignore[attr-defined]
            try:
                self._tether_apply_autocommit(raw, autocommit)
            except Exception as exc:
                if not adapter.is_connection_lost(raw, exc):
                    raise
                adapter.close(raw)

    def is_usable(self) -> bool:
        """Whether the connection works; a lost one outside a transaction is reopened."""
        if not self._tether_enabled:
            return bool(super().is_usable())  # type: ignore[misc]
        con = self.connection
        if con is None:
            return False
        raw = con.dbapi_connection
        if raw is None:
            return True  # reopened by its next statement
        return bool(con.adapter.ping(raw))
