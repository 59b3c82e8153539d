"""Django's MySQL/MariaDB backend on PyMySQL and tether's pooled or persistent connections.

Django's MySQL backend is written for mysqlclient (``import MySQLdb``).
tether's MySQL driver is PyMySQL, which can pose as mysqlclient
(``pymysql.install_as_MySQLdb()``, and a mysqlclient-like ``version_info``
that passes Django's version check). This backend does that when it is
imported: unless ``MySQLdb`` was imported already, ``import MySQLdb`` gives
PyMySQL in this process from then on, for Django's backend code and for
everyone else. If the real mysqlclient was imported first, it refuses to
load (mixing the two drivers' converters would corrupt values).

Django does not test PyMySQL; tether's tests run Django's backend on it
against MariaDB (migrations, transactions, savepoints, a threaded server
through a restart). Everything is Django's ``django.db.backends.mysql``
backend except where the connection comes from (see
:mod:`tether.frameworks.django`): the session setup (``SQL_AUTO_IS_NULL``,
the isolation level, autocommit) runs on every new driver connection.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def _pymysql_as_mysqldb() -> None:
    try:
        import pymysql
    except ImportError as exc:
        raise ImproperlyConfigured(
            "tether.frameworks.django.mysql needs PyMySQL: pip install 'tether-frameworks[pymysql]'"
        ) from exc
    current = sys.modules.get("MySQLdb")
    if current is None:
        pymysql.install_as_MySQLdb()
    elif current is not pymysql:
        raise ImproperlyConfigured(
            "tether.frameworks.django.mysql runs Django's MySQL backend on PyMySQL, but"
            " mysqlclient (MySQLdb) was imported already in this process; import this"
            " backend first, or use Django's own MySQL backend"
        )


_pymysql_as_mysqldb()

from django.db.backends.mysql import base as mysql  # noqa: E402

from .._base import TetherWrapperMixin  # noqa: E402

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(TetherWrapperMixin, mysql.DatabaseWrapper):  # type: ignore[misc]
    """Django's MySQL ``DatabaseWrapper`` whose connections are tether's (PyMySQL)."""

    def get_connection_params(self) -> dict[str, Any]:
        return self._tether_connection_params(super().get_connection_params())

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self._tether_enabled:
            return super().get_new_connection(conn_params)
        return self._tether_checkout(self.Database.connect, conn_params)

    def _tether_prepare(self, raw: Any, autocommit: bool) -> None:
        # What Django's get_new_connection() and init_connection_state() do.
        if raw.encoders.get(bytes) is bytes:
            raw.encoders.pop(bytes)
        with raw.cursor() as cursor:
            cursor.execute("SET SQL_AUTO_IS_NULL = 0")
            if self.isolation_level:
                cursor.execute(
                    f"SET SESSION TRANSACTION ISOLATION LEVEL {self.isolation_level.upper()}"
                )
        raw.autocommit(autocommit)

    def _tether_apply_autocommit(self, raw: Any, autocommit: bool) -> None:
        raw.autocommit(autocommit)
