"""Django's PostgreSQL backend (psycopg 3) on tether's pooled or persistent connections.

Everything is Django's ``django.db.backends.postgresql`` backend, except
where the connection comes from (see :mod:`tether.frameworks.django`):
``get_new_connection`` takes a tether connection, the session setup
(time zone, ``assume_role``, ``isolation_level``, autocommit) runs on every
new driver connection tether opens, and server-side cursors (``.iterator()``)
are made through tether's connection, so they too run under tether's
reopen rule.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base as postgresql
from django.db.backends.postgresql.psycopg_any import IsolationLevel, is_psycopg3

from .._base import TetherWrapperMixin

if not is_psycopg3:
    raise ImproperlyConfigured(
        "tether.frameworks.django.postgresql needs psycopg 3 (tether's PostgreSQL driver);"
        " only psycopg2 is installed"
    )

from psycopg import sql
from psycopg.pq import Format

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(TetherWrapperMixin, postgresql.DatabaseWrapper):  # type: ignore[misc]
    """Django's PostgreSQL ``DatabaseWrapper`` whose connections are tether's."""

    def get_connection_params(self) -> dict[str, Any]:
        if self.settings_dict["OPTIONS"].get("pool"):
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]: OPTIONS['pool'] enables Django's own psycopg pool;"
                " with tether, configure OPTIONS['tether'] instead"
            )
        return self._tether_connection_params(super().get_connection_params())

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self._tether_enabled:
            return super().get_new_connection(conn_params)
        self.isolation_level = self._tether_isolation_level() or IsolationLevel.READ_COMMITTED
        return self._tether_checkout(self.Database.connect, conn_params)

    def _tether_isolation_level(self) -> Any:
        value = self.settings_dict["OPTIONS"].get("isolation_level")
        if value is None:
            return None
        try:
            return IsolationLevel(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {value} specified."
                " Use one of the psycopg.IsolationLevel values."
            ) from None

    def _tether_prepare(self, raw: Any, autocommit: bool) -> None:
        options = self.settings_dict["OPTIONS"]
        # Django 5 names its server-side cursor class; 4.2 (the last Django for
        # Python 3.9) uses psycopg's default, as the connection then does.
        server_side_cursor = getattr(postgresql, "ServerSideCursor", None)
        if server_side_cursor is not None and options.get("server_side_binding") is not True:
            # What Django's create_cursor() does for named cursors, made the
            # connection's default so that tether creates them (see create_cursor).
            raw.server_cursor_factory = server_side_cursor
        level = self._tether_isolation_level()
        if level is not None:
            raw.isolation_level = level
        changed = False
        timezone_name = self.timezone_name
        if timezone_name and raw.info.parameter_status("TimeZone") != timezone_name:
            with raw.cursor() as cursor:
                cursor.execute(self.ops.set_time_zone_sql(), [timezone_name])
            changed = True
        role = options.get("assume_role")
        if role:
            with raw.cursor() as cursor:
                cursor.execute(sql.SQL("SET ROLE {}").format(sql.Literal(role)))
            changed = True
        if changed and not raw.autocommit:
            raw.commit()
        raw.autocommit = autocommit

    def _tether_apply_autocommit(self, raw: Any, autocommit: bool) -> None:
        raw.autocommit = autocommit

    def create_cursor(self, name: str | None = None) -> Any:
        if not self._tether_enabled:
            return super().create_cursor(name)
        con = self.connection
        if name:
            # A server-side cursor (QuerySet.iterator()). Django builds it with
            # ServerSideCursor(connection, ...), which would bypass tether;
            # the driver connection's server_cursor_factory is that class
            # (see _tether_prepare), so tether's cursor() makes the same one.
            cursor = con.cursor(name, scrollable=False, withhold=con.autocommit)
        else:
            cursor = con.cursor()
        tzloader = con.adapters.get_loader(postgresql.TIMESTAMPTZ_OID, Format.TEXT)
        if self.timezone != tzloader.timezone:
            postgresql.register_tzloader(self.timezone, cursor)
        return cursor
