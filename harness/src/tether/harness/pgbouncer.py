"""The old home of :class:`PgBouncer`, now :mod:`tether.harness.servers.pgbouncer`.

PgBouncer is one more server of the harness, so it lives in the servers package; this module
keeps ``from tether.harness.pgbouncer import PgBouncer`` (the README's spelling) working.
"""

from __future__ import annotations

from .servers.pgbouncer import (
    DEFAULT_SETTINGS,
    INSTALL_HINT,
    PGBOUNCER_BINARY_ENV,
    POOL_MODES,
    PgBouncer,
    PoolMode,
    find_pgbouncer,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "INSTALL_HINT",
    "PGBOUNCER_BINARY_ENV",
    "POOL_MODES",
    "PgBouncer",
    "PoolMode",
    "find_pgbouncer",
]
