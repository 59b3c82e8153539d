"""Where local servers keep their files: fast scratch space, a template cache, no leftovers.

A data directory is ~1000 small files; on some disks creating them costs
~1 ms each, on tmpfs almost nothing. So server directories go to
:func:`_scratch_dir`: ``$TETHER_HARNESS_TMPDIR``, else /dev/shm when it has
room, else the caller's work dir or the system temp dir.

The data directory built by ``initdb`` / ``mariadb-install-db`` (0.5-1.5 s)
is built once per machine as a template (:func:`_cached_template`, in
``$TETHER_HARNESS_CACHE``, under a file lock, keyed by the binaries'
fingerprints) and copied for each server (:func:`_create_data_dir`), which
then starts in ~0.15 s.

A harness process that died without cleaning up leaves its directories
behind, named ``tether-pg-<pid>-...``, ``tether-mariadb-<pid>-...`` or
``tether-pgbouncer-<pid>-...``;
:func:`_sweep_stale_dirs` deletes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if sys.platform != "win32":
    import fcntl

__all__ = ["CACHE_ENV", "SCRATCH_ENV"]

log = logging.getLogger(__name__)

CACHE_ENV = "TETHER_HARNESS_CACHE"
SCRATCH_ENV = "TETHER_HARNESS_TMPDIR"

_CACHE_FORMAT = "1"  # bump when the template build changes
_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 2 * 1024**3
_STALE_DIR = re.compile(r"tether-(?:pg|mariadb|pgbouncer)-(\d+)-")
_swept: set[Path] = set()


def _binary_fingerprint(path: Path) -> str:
    st = path.resolve().stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _cache_root() -> Path | None:
    """The template cache directory, or None when caching is off or unsafe."""
    if sys.platform == "win32":
        return None
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    scratch = _scratch_dir() or Path(tempfile.gettempdir())
    root = Path(value) if value else scratch / f"tether-harness-cache-{os.geteuid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        st = os.lstat(root)
        if st.st_uid != os.geteuid() or not os.path.isdir(root) or os.path.islink(root):
            log.warning("template cache %s is not a directory of ours: not caching", root)
            return None
        # The postgres OS user must be able to reach its build directory inside.
        os.chmod(root, 0o755)
    except OSError as exc:
        log.warning("template cache %s unusable (%s): not caching", root, exc)
        return None
    return root


def _cached_template(
    kind: str, fingerprint: str, build: Callable[[Path], None], owner: tuple[int, int] | None
) -> Path | None:
    """A data directory built once per machine by ``build(dest)``, or None without a cache.

    The build runs under an exclusive file lock, into a temporary directory that
    is renamed into place when complete, so concurrent xdist workers build it
    once and nobody ever copies a half-built template.
    """
    root = _cache_root()
    if root is None:
        return None
    key = f"{kind}-" + hashlib.sha256(f"{_CACHE_FORMAT}|{fingerprint}".encode()).hexdigest()[:16]
    final = root / key
    if final.is_dir():
        return final / "data"
    with open(root / f"{key}.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if final.is_dir():
            return final / "data"
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=root))
        try:
            if owner is not None:
                os.chown(build_dir, *owner)
            started = time.monotonic()
            build(build_dir / "data")
            os.rename(build_dir, final)
            log.info("built %s template %s in %.2fs", kind, final, time.monotonic() - started)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
    return final / "data"


def _scratch_dir() -> Path | None:
    """Where server directories go: ``$TETHER_HARNESS_TMPDIR``, else /dev/shm if roomy.

    Data directories hold ~1000 small files; on some disks creating them costs
    ~1 ms each, on tmpfs almost nothing. /dev/shm is used only with at least
    2 GiB free (Docker's default /dev/shm is 64 MiB). None: use the caller's
    work dir or the system temp dir.
    """
    value = os.environ.get(SCRATCH_ENV)
    if value:
        return Path(value)
    try:
        st = os.statvfs(_SHM)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < _SHM_MIN_FREE or not os.access(_SHM, os.W_OK | os.X_OK):
        return None
    return _SHM


def _sweep_stale_dirs(parent: Path) -> None:
    """Delete server directories left by harness processes that died without cleaning up."""
    if parent in _swept:
        return
    _swept.add(parent)
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _STALE_DIR.match(entry.name)
            if match is None or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                log.info("removing %s, left by dead process %s", entry, match.group(1))
                shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass  # alive, another user's


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a data directory keeping modes and owners (``cp -a``)."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True, capture_output=True)


def _create_data_dir(
    dest: Path,
    kind: str,
    fingerprint: str,
    build: Callable[[Path], None],
    owner: tuple[int, int] | None = None,
) -> None:
    """Create a data directory at ``dest``: a copy of the cached template, else ``build(dest)``.

    ``fingerprint`` names what the template depends on (the binaries, the
    build's options): a change builds a new template. ``owner`` (uid, gid)
    owns the build directory when the server runs as another OS user.
    """
    template = _cached_template(kind, fingerprint, build, owner)
    if template is not None:
        _copy_tree(template, dest)
    else:
        build(dest)
