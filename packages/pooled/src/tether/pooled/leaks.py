"""Leak detection: find connections that were taken from the pool and not given back.

Two kinds of leak are reported, on the pool's logger at WARNING level, each
once per checkout:

* **held too long**: with ``leak_threshold=seconds``, the maintenance
  thread logs every connection checked out longer ago than that, with the
  stack of the code that checked it out. It may be a leak or a slow
  transaction; either way it is worth knowing. The connection is not taken
  away from its holder.
* **garbage-collected without being returned** (``del db``, or a proxy
  that went out of scope): the proxy gives its connection back to the pool
  -- as DBUtils' does -- and the pool logs it. The stack of the checkout is
  included when ``leak_threshold`` is set.

Recording a stack costs a few microseconds per checkout (the frames are
walked, source lines are only read when a leak is reported), so it is done
only when ``leak_threshold`` is set; the checkout hot path without it stays
below a microsecond.
"""

from __future__ import annotations

import linecache
import sys

__all__ = ["Stack", "capture_stack", "format_stack"]

#: (filename, line number, function name) of each frame, innermost last.
Stack = tuple[tuple[str, int, str], ...]

_LIMIT = 32


def capture_stack(limit: int = _LIMIT) -> Stack:
    """The caller's stack without tether.pooled's own frames; cheap: no source lines read."""
    frames: list[tuple[str, int, str]] = []
    frame = sys._getframe(1)
    while frame is not None and len(frames) < limit + 8:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back  # type: ignore[assignment]
    frames.reverse()
    while frames and frames[-1][0].replace("\\", "/").rfind("tether/pooled/") >= 0:
        frames.pop()
    return tuple(frames[-limit:])


def format_stack(stack: Stack | None) -> str:
    """``stack`` as a traceback-like text, reading source lines now."""
    if not stack:
        return "  (stack not recorded: set leak_threshold to record where connections are taken)"
    lines = []
    for filename, lineno, name in stack:
        lines.append(f'  File "{filename}", line {lineno}, in {name}')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    return "\n".join(lines)
