"""Child processes: retried on a taken port, killed on a failed start, stopped or killed whole.

Real child processes (small Python scripts standing in for a server), no mocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.harness import processes
from tether.harness.processes import ChildProcess, spawn, start_on_free_port
from tether.harness.servers import ServerStartError

_SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


def _gone(pid: int) -> bool:
    """No such process, or only a zombie nobody reaped (PID 1 in a container may not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _spawn(tmp_path: Path, script: str, *, timeout: float = 10.0) -> ChildProcess:
    log_path = tmp_path / "child.log"
    return spawn(
        [sys.executable, "-c", script],
        name="test child",
        log_path=log_path,
        ready=lambda popen: "ready" in log_path.read_text().splitlines(),
        error=ServerStartError,
        port_in_use=("address already in use",),
        timeout=timeout,
        poll=0.01,
        pdeathsig="KILL",
    )


def test_a_port_taken_is_replaced_by_another(tmp_path: Path) -> None:
    tried: list[int] = []

    def start(port: int) -> ChildProcess:
        tried.append(port)
        if len(tried) == 1:
            return _spawn(tmp_path, "print('bind: Address already in use'); raise SystemExit(1)")
        return _spawn(tmp_path, _SLEEPER)

    child = start_on_free_port(start, port=None, error=ServerStartError)
    try:
        assert len(tried) == 2 and tried[0] != tried[1]
        assert child.running() and child.pid is not None
    finally:
        assert child.stop(signal.SIGTERM, 5)  # a Python child exits on SIGTERM
    assert not child.running() and child.pid is None


def test_a_fixed_port_taken_is_the_callers_error_with_the_log(tmp_path: Path) -> None:
    def start(port: int) -> ChildProcess:
        return _spawn(tmp_path, f"print('listen :{port}: address already in use'); exit(1)")

    with pytest.raises(ServerStartError, match=r"port is in use(.|\n)*address already in use"):
        start_on_free_port(start, port=processes.free_port(), error=ServerStartError)


def test_a_child_that_exits_while_starting_is_an_error_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match=r"exited with status 3(.|\n)*no config"):
        _spawn(tmp_path, "print('FATAL: no config'); raise SystemExit(3)")


def test_a_child_never_ready_is_killed_and_reaped(tmp_path: Path) -> None:
    pids: list[int] = []
    log_path = tmp_path / "child.log"

    def ready(popen: subprocess.Popen[bytes]) -> bool:
        pids.append(popen.pid)
        return False

    started = time.monotonic()
    with pytest.raises(ServerStartError, match="not ready after"):
        spawn(
            [sys.executable, "-c", _SLEEPER],
            name="test child",
            log_path=log_path,
            ready=ready,
            error=ServerStartError,
            port_in_use=(),
            timeout=0.5,
            poll=0.01,
        )
    assert time.monotonic() - started < 5
    assert _gone(pids[0])


def test_stop_kills_a_child_that_ignores_the_signal(tmp_path: Path) -> None:
    script = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + _SLEEPER
    child = _spawn(tmp_path, script)
    pid = child.popen.pid
    assert not child.stop(signal.SIGTERM, 0.3)
    assert _gone(pid)


def test_kill_takes_the_childs_own_children_along(tmp_path: Path) -> None:
    script = (
        "import subprocess, time; p = subprocess.Popen(['sleep', '60']);"
        " print('grandchild', p.pid); print('ready', flush=True); time.sleep(60)"
    )
    child = _spawn(tmp_path, script)
    grandchild = int(child.output().split("grandchild ")[1].split()[0])
    assert not _gone(grandchild)
    child.kill()
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(grandchild)
    assert not child.running()
    with pytest.raises(ProcessLookupError):
        os.kill(child.popen.pid, 0)  # reaped, not a zombie
