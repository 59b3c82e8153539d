"""Child processes the harness owns: start one on a free port, wait until ready, never leak it.

Every server the harness runs (PostgreSQL, MariaDB, toxiproxy) is a direct child of the Python
process, never a daemon, so the harness can signal it, ``wait()`` it after a kill (a zombie still
answers ``kill(pid, 0)``) and be sure nothing restarts it behind its back. They all start the same
way, and this module is that way:

- :func:`start_on_free_port` picks a free loopback port (:func:`free_port`: bind port 0, read it
  back). Another process may take the port before the child binds it, so when the child exits
  saying "address in use" it tries again on a new one.
- :func:`spawn` starts the child in a process group of its own (a SIGKILL of the group takes its
  children along: PostgreSQL's backends), appends its output to a log file, and polls a
  ``ready`` check until it passes, the child exits, or the start timeout expires. Its errors
  carry the tail of the log. On any failure the child is killed and reaped.
- :func:`pdeathsig_prefix` (``setpriv --pdeathsig``) asks the kernel to signal the child when the
  test run that started it dies: a SIGKILLed run runs no atexit handlers.
- :func:`track` puts the child's owner in a set whose ``close()`` runs at exit, for runs that end
  without closing what they started.

:class:`ChildProcess` is one started child: ``stop(sig, timeout)`` asks it to shut down and kills
it when it does not, ``kill()`` SIGKILLs its group and reaps it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = [
    "LOOPBACK",
    "ChildProcess",
    "PortInUseError",
    "free_port",
    "log_tail",
    "pdeathsig_prefix",
    "spawn",
    "start_on_free_port",
    "track",
    "untrack",
]

log = logging.getLogger(__name__)

#: The address every child of the harness listens on.
LOOPBACK = "127.0.0.1"

_T = TypeVar("_T")


class PortInUseError(Exception):
    """The child exited because another process holds its port.

    :func:`spawn` raises it; :func:`start_on_free_port` catches it and tries another port.
    """


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (bind port 0 and read it back).

    Another process may take it before the child binds it: start children
    with :func:`start_on_free_port`, which tries again on a new one.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_on_free_port(
    start: Callable[[int], _T],
    *,
    port: int | None,
    error: Callable[[str], Exception],
    host: str = LOOPBACK,
    attempts: int = 5,
) -> _T:
    """``start(port)``, or with ``port`` None ``start(free_port())`` up to ``attempts`` times.

    ``start`` raises :class:`PortInUseError` when the port was taken (as :func:`spawn` does);
    a fixed port gets one attempt. When no attempt finds a free port, the last
    :class:`PortInUseError` is raised again as ``error(message)``.
    """
    tries = 1 if port is not None else attempts
    for attempt in range(1, tries + 1):
        chosen = port if port is not None else free_port(host)
        try:
            return start(chosen)
        except PortInUseError as exc:
            if attempt == tries:
                raise error(str(exc)) from exc
            log.info("port %d was taken before the child bound it: retrying", chosen)
    raise AssertionError("unreachable")  # pragma: no cover


def pdeathsig_prefix(sig: str) -> list[str]:
    """``setpriv --pdeathsig SIG --``: the kernel signals the child when its parent dies.

    A pytest run that is itself SIGKILLed or SIGTERMed runs no atexit handlers;
    this keeps such a run from leaking servers. The signal fires when the
    *thread* that forked the child exits, so it is only used from the main
    thread (where that means the process). Empty off Linux or without setpriv.
    """
    if not sys.platform.startswith("linux"):
        return []
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, "--"] if setpriv else []


def log_tail(path: Path | None, lines: int = 25, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` after byte ``start`` ("" when unreadable)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- closing what is left at exit ---------------------------------------------------------


class _Closeable(Protocol):
    def close(self) -> None: ...


_live: set[_Closeable] = set()
_live_lock = threading.Lock()


def track(owner: _Closeable) -> None:
    """Close ``owner`` at interpreter exit unless :func:`untrack` is called first."""
    with _live_lock:
        _live.add(owner)


def untrack(owner: _Closeable) -> None:
    """Forget ``owner`` (it closed itself). No error when it was not tracked."""
    with _live_lock:
        _live.discard(owner)


def _close_live() -> None:
    with _live_lock:
        owners = list(_live)
    for owner in owners:
        try:
            owner.close()
        except Exception:
            log.exception("closing %r at exit failed", owner)


atexit.register(_close_live)


# -- one child -----------------------------------------------------------------------------


class ChildProcess:
    """A started child in its own process group, writing to ``log_path`` from ``log_offset`` on."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_offset: int) -> None:
        self.popen = popen
        self.log_path = log_path
        self.log_offset = log_offset

    def __repr__(self) -> str:
        return f"<ChildProcess pid={self.popen.pid} returncode={self.popen.poll()}>"

    @property
    def pid(self) -> int | None:
        """The process id while the child runs, else None."""
        return self.popen.pid if self.running() else None

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self, lines: int = 25) -> str:
        """The last ``lines`` lines the child wrote since it started."""
        return log_tail(self.log_path, lines, self.log_offset)

    def stop(self, sig: signal.Signals, timeout: float) -> bool:
        """Send ``sig`` and wait up to ``timeout`` seconds for the child to exit.

        Returns False when it did not and was killed (:meth:`kill`) instead;
        True when it exited by itself (or had already).
        """
        if not self.running():
            self.popen.wait()
            return True
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the child's process group and reap the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()

    def reap(self) -> None:
        """Kill the child if it still runs; in any case collect its exit status."""
        if self.running():
            self.kill()
        else:
            self.popen.wait()


def spawn(
    argv: Sequence[str],
    *,
    name: str,
    log_path: Path,
    ready: Callable[[subprocess.Popen[bytes]], bool],
    error: Callable[[str], Exception],
    port_in_use: Sequence[str],
    timeout: float,
    poll: float,
    pdeathsig: str | None = None,
    **popen_kwargs: Any,
) -> ChildProcess:
    """Start ``argv`` and wait until ``ready(popen)`` is true.

    ``name`` says what starts in errors (``"postgresql server on port 5432"``).
    The child's stdout and stderr are appended to ``log_path``. When it exits
    first, its log since the start decides: one of the (lower-case)
    ``port_in_use`` phrases raises :class:`PortInUseError`, anything else
    ``error(message)``; so does ``timeout`` seconds without being ready. On any
    failure (an interrupt too) the child is killed and reaped. ``pdeathsig``
    names the signal the child gets when this process dies; ``popen_kwargs``
    go to :class:`subprocess.Popen` (``env``, ``user``, ``group``...).
    """
    offset = log_path.stat().st_size if log_path.exists() else 0
    prefix = pdeathsig_prefix(pdeathsig) if pdeathsig else []
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: a kill takes the child's children too
            **popen_kwargs,
        )
    child = ChildProcess(popen, log_path, offset)
    deadline = time.monotonic() + timeout
    try:
        while True:
            # Exited first: a stranger on the port may answer the ready check for a dead child.
            if popen.poll() is not None:
                output = child.output()
                if any(phrase in output.lower() for phrase in port_in_use):
                    raise PortInUseError(f"{name}: the port is in use; log {log_path}:\n{output}")
                raise error(
                    f"{name} exited with status {popen.returncode} while starting;"
                    f" log {log_path}:\n{output}"
                )
            if ready(popen):
                break
            if time.monotonic() > deadline:
                raise error(
                    f"{name} not ready after {timeout:.0f}s; log {log_path}:\n{child.output()}"
                )
            time.sleep(poll)
    except BaseException:
        child.reap()
        raise
    return child
