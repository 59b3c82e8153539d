"""Django database backends whose connections are tether's: pooled or persistent.

::

    DATABASES = {
        "default": {
            "ENGINE": "tether.frameworks.django.postgresql",  # or "tether.frameworks.django.mysql"
            "NAME": "app", "USER": "app", "PASSWORD": "secret", "HOST": "db", "PORT": 5432,
            "OPTIONS": {"tether": {"pool": "pooled", "maxconnections": 8}},
        }
    }

``OPTIONS["tether"]``: ``"pool"`` is ``"pooled"`` (default: a
:class:`~tether.pooled.PooledDB` per database, shared by all threads) or
``"persistent"`` (a :class:`~tether.persistent.PersistentDB`: each thread
keeps its own connection); every other key is a keyword argument of that
class (``maxconnections``, ``mincached``, ``checkout_timeout``,
``max_lifetime``, ``maxusage``, ``setsession``, ``on_connect``...).

How Django's settings map:

* Django's "connect" is a tether checkout and its "close" gives the
  connection back, so ``CONN_MAX_AGE`` says how long a thread keeps its
  checkout: ``0`` (the default) gives it back at the end of every request,
  which is what a pool wants. How long a *driver* connection lives is
  tether's ``max_lifetime`` / ``maxusage``; ``CONN_MAX_AGE`` no longer closes
  any.
* ``CONN_HEALTH_CHECKS = True`` makes tether check the connection (one
  round trip) when a request takes it; by default nothing is checked, and
  a session the server ended (a restart) is noticed on its socket before
  the next statement is sent and reopened, outside transactions.
* Inside ``atomic()`` a lost connection is never replaced: the driver's
  error reaches Django (as ``django.db.OperationalError``), the block rolls
  back, and the connection is reopened afterwards.
* ``connection_created`` is sent for every checkout, not for every driver
  connection; use ``OPTIONS["tether"]["on_connect"]`` (called with each new
  driver connection) for per-session setup.

:func:`pools` returns the tether pools in use (for ``stats()``),
:func:`close_pools` closes them.
"""

from ._base import POOL_MODES, close_pools, pools

__all__ = ["POOL_MODES", "close_pools", "pools"]
