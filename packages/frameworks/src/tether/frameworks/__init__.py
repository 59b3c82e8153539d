"""tether-frameworks: tether's connections under SQLAlchemy and Django.

Two integrations, each imported only by those who use it:

* :mod:`tether.frameworks.sqlalchemy`: :class:`~tether.frameworks.sqlalchemy.TetherPool`,
  a SQLAlchemy pool class backed by a tether pool (``pooled``) or by tether's
  per-thread connections (``persistent``).
* :mod:`tether.frameworks.django`: Django database backends,
  ``ENGINE = "tether.frameworks.django.postgresql"`` (psycopg 3) and
  ``"tether.frameworks.django.mysql"`` (PyMySQL), configured with
  ``OPTIONS["tether"]``.

Both run the framework's per-connection setup on every new driver
connection tether opens (including the ones it opens transparently after a
server restart), hand the framework tether's connections otherwise
unchanged, and let the driver's own errors reach the framework when tether
cannot recover transparently, so the framework's disconnect handling works
as it does without tether. See the package README for configuration.
"""

from ._version import __version__

__all__ = ["__version__"]
