"""tether-persistent: one steady database connection per thread, kept for the thread's life.

``PersistentDB(creator, ...)`` (any DB-API 2 driver) and ``PersistentPg(...)``
(PyGreSQL's classic API) keep DBUtils 3.2's interface: ``persist.connection()``
returns the calling thread's steady connection, opening it on first use.
Unlike DBUtils, a transaction a request left open is rolled back before the
thread's next request, connections are closed when their thread ends, a cap
(``maxconnections=``) can limit how many threads hold one, and ``close()``
closes them all. Read :mod:`tether.persistent.core` for the idea and its limits.
"""

from .core import (
    NotSupportedError,
    PersistentDB,
    PersistentDBError,
    PersistentPg,
    TooManyConnectionsError,
    __version__,
)
from .options import PersistentOptions

__all__ = [
    "NotSupportedError",
    "PersistentDB",
    "PersistentDBError",
    "PersistentOptions",
    "PersistentPg",
    "TooManyConnectionsError",
    "__version__",
]
