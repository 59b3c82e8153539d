"""tether-simple-pool: the teaching reference of connection pooling, and tether's driver adapters.

``SimplePooledDB`` lends a fixed set of connections to one thread at a time;
read :mod:`tether.simple_pool.pool` to learn how a pool works. The driver
adapters in :mod:`tether.simple_pool.drivers` hide what differs between
database drivers, for this layer and every tether layer above it.

As in DBUtils' ``simple_pooled_db``/``simple_pooled_pg``, the classes are also
available as ``PooledDB`` and ``PooledPg``.
"""

from importlib.metadata import PackageNotFoundError, version

from .attributes import instance_dict
from .drivers import DriverAdapter, adapter_for
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionReturned,
    NotSupportedError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TetherError,
)
from .live import Uncopyable
from .pool import PooledConnection, PooledCursor, SimplePooledDB, SimplePooledPg

try:
    __version__ = version("tether-simple-pool")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

#: DBUtils' names, so that migrating from ``dbutils.simple_pooled_db`` is an import change.
PooledDB = SimplePooledDB
PooledPg = SimplePooledPg
PooledDBError = PoolError

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionReturned",
    "DriverAdapter",
    "NotSupportedError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PooledConnection",
    "PooledCursor",
    "PooledDB",
    "PooledDBError",
    "PooledPg",
    "SimplePooledDB",
    "SimplePooledPg",
    "TetherError",
    "Uncopyable",
    "__version__",
    "adapter_for",
    "instance_dict",
]
