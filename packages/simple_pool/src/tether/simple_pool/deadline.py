"""Waiting for a connect no longer than a deadline, whatever the driver's connect timeout.

Drivers bound a connect coarsely or not at all: libpq counts
``connect_timeout`` in whole seconds with a minimum of 2, a user's own
connect function takes no timeout. So a connect that must respect a
checkout deadline runs on a short-lived thread of its own, and the caller
stops waiting at the deadline. Whatever the connect makes after that is not
lost: it goes to ``late``, which keeps or closes it.

A public module of ``tether-simple-pool``: the persistent and pooled layers
bound their connects with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LATE", "call_within", "remaining"]

T = TypeVar("T")


class _Late:
    """The marker :func:`call_within` returns when the deadline passed first."""

    def __repr__(self) -> str:
        return "LATE"


LATE = _Late()


class _Handoff(Generic[T]):
    __slots__ = ("done", "error", "lock", "result", "taken")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.taken = False  # the caller stopped waiting: the result is not its any more


def call_within(
    call: Callable[[], T], seconds: float, late: Callable[[T], object], name: str
) -> T | _Late:
    """``call()``'s result if it comes within ``seconds``, else :data:`LATE`.

    ``call`` runs on a daemon thread called ``name``; its exception is
    raised here. A result that comes after the deadline is passed to
    ``late`` on that thread (an exception then is dropped: nobody waits for
    it). When no thread can be started (interpreter exit, a thread limit),
    ``call`` runs here, unbounded.
    """
    handoff: _Handoff[T] = _Handoff()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # to the caller, if it still waits
            with handoff.lock:
                if not handoff.taken:
                    handoff.error = exc
                    handoff.done.set()
            return
        with handoff.lock:
            if not handoff.taken:
                handoff.result = result
                handoff.done.set()
                return
        late(result)

    thread = threading.Thread(target=run, name=name, daemon=True)
    try:
        try:
            thread.start()
        except RuntimeError:
            return call()
        handoff.done.wait(max(seconds, 0.0))
    except BaseException:
        # Interrupted (a signal handler's exception: a request's time budget,
        # Ctrl-C) while the call runs: nobody takes its result now, so it goes
        # to ``late`` as one after the deadline does (found by an outside attack:
        # a pool's interrupted connect kept its connection counted as in use).
        with handoff.lock:
            handoff.taken = True
            arrived = handoff.done.is_set() and handoff.error is None
        if arrived:
            late(handoff.result)  # type: ignore[arg-type]  # set with done
        raise
    with handoff.lock:
        handoff.taken = True
        finished = handoff.done.is_set()
    if not finished:
        return LATE
    if handoff.error is not None:
        error, handoff.error = handoff.error, None
        raise error
    return handoff.result  # type: ignore[return-value]  # set with done


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value), never negative."""
    return max(deadline - time.monotonic(), 0.0)
