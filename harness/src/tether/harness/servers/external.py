"""Servers somebody else runs: a URL (``TETHER_PG_DSN``, ``TETHER_MARIADB_DSN``), not a process.

CI services, ``docker compose up`` or a developer's own server: the harness
connects to them but does not own them. :class:`ExternalServer` is not
controllable: ``stop()``, ``restart()`` and ``kill()`` raise
:class:`~.base.ServerNotControllableError`, so the tests that need them fail
with a message saying how to get a controllable server instead.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import ClassVar

from .base import (
    DatabaseServer,
    ServerKind,
    ServerNotControllableError,
    ServerUnavailableError,
    ShutdownMode,
    _check_mode,
)

__all__ = ["ExternalServer"]


class ExternalServer(DatabaseServer):
    """A server the harness does not own, given by a URL (``TETHER_PG_DSN``...).

    ``postgresql://user:pw@host:port/db`` (also ``postgres://``) or
    ``mysql://`` / ``mariadb://``. The user should be a superuser (PostgreSQL)
    or hold all privileges (MariaDB) for ``create_database()`` and
    ``admin_execute()``. Not controllable: ``stop()``, ``restart()`` and
    ``kill()`` raise :class:`ServerNotControllableError`.
    """

    controllable: ClassVar[bool] = False

    _SCHEMES: ClassVar[dict[str, ServerKind]] = {
        "postgresql": "postgresql",
        "postgres": "postgresql",
        "mysql": "mariadb",
        "mariadb": "mariadb",
    }

    @classmethod
    def from_dsn(cls, dsn: str, *, source: str = "DSN") -> ExternalServer:
        """Parse ``dsn``; ``source`` names it in errors (e.g. the environment variable)."""
        parts = urllib.parse.urlsplit(dsn)
        scheme = parts.scheme.split("+")[0].lower()
        kind = cls._SCHEMES.get(scheme)
        if kind is None:
            raise ValueError(
                f"{source}: unsupported scheme {parts.scheme!r}; expected postgresql:// or mysql://"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{source}: invalid port") from None
        database = urllib.parse.unquote(parts.path.lstrip("/"))
        if not parts.hostname or not parts.username or not database:
            raise ValueError(f"{source}: expected {scheme}://user:password@host:port/database")
        return cls(
            kind,
            parts.hostname,
            port or (5432 if kind == "postgresql" else 3306),
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
            database,
        )

    def start(self) -> None:
        """Nothing to start: check that the server answers."""
        if not self.is_running():
            raise ServerUnavailableError(f"{self!r} does not answer at {self.redacted_url()}")

    def _refuse(self, action: str) -> ServerNotControllableError:
        return ServerNotControllableError(
            f"cannot {action} {self!r}: the harness does not own external servers"
            " (unset TETHER_PG_DSN / TETHER_MARIADB_DSN to get controllable local servers,"
            " or deselect these tests with -m 'not restart')"
        )

    def stop(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        raise self._refuse("stop")

    def restart(self, mode: ShutdownMode = "fast") -> None:
        _check_mode(mode)
        raise self._refuse("restart")

    def kill(self) -> None:
        raise self._refuse("kill")

    def is_running(self) -> bool:
        try:
            with contextlib.closing(self.admin_connect()):
                return True
        except Exception:
            return False

    def close(self) -> None:
        """Nothing to clean up: the server is not ours."""

    def _state(self) -> str:
        return " external"
