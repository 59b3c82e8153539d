"""The chaos suite: real faults against real servers, through real pools.

Options: ``--chaos-full`` (or ``TETHER_CHAOS_FULL=1``) runs the full matrix
instead of the CI-sized one; ``--chaos-results DIR`` (or
``TETHER_CHAOS_RESULTS``) puts the reports elsewhere than
``<rootdir>/results/chaos``. The controller process clears the per-scenario
files when the run starts and writes ``report.md`` and ``chaos.json`` when it
ends (pytest-xdist workers each write their scenarios' files).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.harness.chaos.fixtures import (  # fixtures, registered by being imported here
    chaos_env,
    chaos_results,
    mariadb_proxy,
    pg_proxy,
    toxiproxy_server,
)
from tether.harness.chaos.matrix import CI_MATRIX, ScenarioSpec, full_matrix
from tether.harness.chaos.report import clear_results, default_results_dir, write_summary

__all__ = ["chaos_env", "chaos_results", "mariadb_proxy", "pg_proxy", "toxiproxy_server"]

FULL_ENV = "TETHER_CHAOS_FULL"
_started = time.monotonic()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tether-chaos")
    group.addoption(
        "--chaos-full",
        action="store_true",
        default=False,
        help=f"run the full chaos matrix (every fault x driver x pool); env {FULL_ENV}=1",
    )
    group.addoption(
        "--chaos-results",
        default=None,
        help="folder for the chaos reports (default: $TETHER_CHAOS_RESULTS or results/chaos)",
    )


def full_requested(config: pytest.Config) -> bool:
    env = os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes")
    return bool(config.getoption("--chaos-full", default=False)) or env


def _results_dir(config: pytest.Config) -> Path:
    option = config.getoption("--chaos-results", default=None)
    return Path(option) if option else default_results_dir(config.rootpath)


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        clear_results(_results_dir(config))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chaos_spec" not in metafunc.fixturenames:
        return
    specs: tuple[ScenarioSpec, ...] = (
        full_matrix() if full_requested(metafunc.config) else CI_MATRIX
    )
    params = [
        pytest.param(
            spec,
            spec.driver,
            id=spec.id,
            marks=[pytest.mark.restart] if spec.restarts_server else [],
        )
        for spec in specs
    ]
    metafunc.parametrize(("chaos_spec", "chaos_driver"), params)


class _FormatEagerly(logging.Filter):
    """Keep a log record's text, not its arguments and exception objects.

    pytest's log capture keeps every record of a test until the test ends. A
    record whose arguments or ``exc_info`` hold an exception keeps its
    traceback, the traceback its frames, the frames the steady connection they
    ran on: the connection stays referenced after the pool is closed and the
    leak check reports it (PersistentDB decides "in use" by references).
    Production handlers format a record and drop it; this filter makes the
    capture handlers do the same, so the suite measures the pool, not pytest.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = ()
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True


@pytest.fixture(autouse=True)
def _captured_logs_hold_no_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    plugin = request.config.pluginmanager.get_plugin("logging-plugin")
    handlers = [
        h
        for h in (getattr(plugin, "caplog_handler", None), getattr(plugin, "report_handler", None))
        if isinstance(h, logging.Handler)
    ]
    eager = _FormatEagerly()
    for handler in handlers:
        handler.addFilter(eager)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(eager)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Chaos tests reach their server through ``chaos_env``: mark them ``server`` too."""
    for item in items:
        if "chaos_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _is_controller(config):
        return
    folder = _results_dir(config)
    report = write_summary(
        folder,
        title="tether chaos run" + (" (full matrix)" if full_requested(config) else " (CI matrix)"),
        extra={
            "matrix": "full" if full_requested(config) else "ci",
            "wall_time": round(time.monotonic() - _started, 1),
            "python": platform.python_version(),
            "exitstatus": int(exitstatus),
        },
    )
    if report is not None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"chaos report: {report}")
