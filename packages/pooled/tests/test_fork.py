"""Fork safety, for every driver: the child never uses, closes or finalizes parent sessions."""

from __future__ import annotations

import gc
import json
import os
from typing import Any

import pytest

from tether.pooled import fork  # noqa: F401  (registers the fork hooks)
from tether.simple_pool.drivers import base as drivers_base

from .conftest import backend_id, execute, make_pool

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _session(target: Any, db: Any) -> Any:
    """What identifies a pooled connection's session: the backend id, or the raw object's id."""
    if target.name == "sqlite3":
        return id(db._con._raw)
    return backend_id(target, db)


def test_child_process_never_uses_inherited_connections(driver_target: Any, pools: Any) -> None:
    target = driver_target
    pool = make_pool(target, maxconnections=3, blocking=True, checkout_timeout=10)
    pools.append(pool)
    idle, held = pool.connection(), pool.connection()
    idle_session, held_session = _session(target, idle), _session(target, held)
    idle_raw, held_raw = idle._con._raw, held._con._raw
    idle.close()  # one idle and one checked out at fork time
    execute(target, held, "SELECT 1")

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit code
        code = 1
        try:
            report: dict[str, Any] = {}
            fresh = pool.connection()
            report["fresh_is_new"] = fresh._con._raw is not idle_raw
            report["fresh_session"] = _session(target, fresh)
            execute(target, fresh, "SELECT 1")
            # the inherited checkout still works: on a new connection of the child's own
            execute(target, held, "SELECT 1")
            report["held_is_new"] = held._con._raw is not held_raw
            report["held_session"] = _session(target, held)
            held.close()
            fresh.close()
            report["stats"] = pool.stats()
            pool.close()
            # Let every inherited driver connection be finalized now, as at the end of a
            # process: that must not reach the parent's sessions either.
            drivers_base._ABANDONED.clear()
            gc.collect()
            os.write(writer, json.dumps(report, default=str).encode())
            code = 0
        except BaseException as exc:
            os.write(writer, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report["fresh_is_new"] and report["held_is_new"]
    if target.name != "sqlite3":
        assert report["fresh_session"] not in (idle_session, held_session)
        assert report["held_session"] not in (idle_session, held_session)
    assert report["stats"]["opened"] >= 1

    # The parent's connections were not touched: same sessions, still working.
    execute(target, held, "SELECT 1")
    assert _session(target, held) == held_session
    again = pool.connection()
    assert again._con._raw is idle_raw
    execute(target, again, "SELECT 1")
    assert _session(target, again) == idle_session
    again.close()
    held.close()
    stats = pool.stats()
    assert stats["checkouts"] == stats["checkins"]
    assert stats["discarded"] == 0
