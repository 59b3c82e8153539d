"""What each piece of tether's hot path costs: the same request with that piece taken out.

The instructions phase says how many instructions tether adds per request;
this says where they go and what each buys. A *variant* takes one piece out
of the installed code, in the callgrind worker's process only (never in a
test, never shipped), by recompiling the one function that holds it with a
line replaced (:func:`edit`): ``if self._observed:`` becomes ``if False:``
(which the compiler drops with its block), a call becomes a constant. The
function is compiled from its own source in its own module's globals, so
everything else about it is what runs in production. The ledger phase
(``phase_ledger.py``) runs each variant's configuration under callgrind like
the instructions phase does, and the difference to the unedited run is what
the piece costs, per request.

A variant is unsafe by construction: it removes a check that keeps a
promise. The *buys* text of each says which one, so a cost is never read
without what it pays for.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VARIANTS", "Variant", "apply", "check", "edit"]


@dataclass(frozen=True)
class Variant:
    """One piece taken out: where it is (configuration), what it is, what it buys."""

    configuration: str
    piece: str
    buys: str
    #: (module, qualified owner inside it or "", function name, {line: replacement})
    edits: tuple[tuple[str, str, str, dict[str, str]], ...] = field(default=())
    #: Workloads it changes (the ledger reports only these; it runs every workload of the
    #: configuration, in the same order as the unedited run: a process that ran other
    #: workloads before counts differently, by up to ~1,500 per request, measured).
    workloads: tuple[str, ...] = ("request",)
    #: Run the statements on the steady connection's driver connection (``dbapi_connection``,
    #: taken once): what is left of tether.steady's cost when no tether code runs per request.
    on_driver: bool = False
    #: Read the held driver connection's ``__dict__`` once, through
    #: ``tether.simple_pool.instance_dict`` as tether.steady does: a variant that *adds*
    #: (its cost is variant minus unedited), on the driver alone.
    adds_dict_read: bool = False


def _owner(module: str, owner: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in owner.split(".") if owner else ():
        obj = getattr(obj, part)
    return obj


def edit(module: str, owner: str, name: str, lines: dict[str, str], install: bool = True) -> None:
    """Recompile ``module.owner.name`` with each line whose stripped text is a key replaced.

    The replacement keeps the line's indentation; every key must match exactly
    one line (a changed source fails loudly instead of measuring nothing).
    ``install=False`` only checks that it can be done (:func:`check`).
    """
    holder = _owner(module, owner)
    found_attr = holder.__dict__[name] if owner else getattr(holder, name)
    # A property's getter is edited (its source, decorator included, makes the property again).
    func = found_attr.fget if isinstance(found_attr, property) else found_attr
    source = textwrap.dedent(inspect.getsource(func)).splitlines()
    for old, new in lines.items():
        found = [i for i, line in enumerate(source) if line.strip() == old]
        if len(found) != 1:
            raise LookupError(f"{module}.{owner}.{name}: {old!r} found {len(found)} times")
        line = source[found[0]]
        source[found[0]] = line[: len(line) - len(line.lstrip())] + new
    namespace: dict[str, Any] = {}
    code = compile("\n".join(source) + "\n", f"<ablation of {name}>", "exec")
    exec(code, func.__globals__, namespace)
    replaced: Any = namespace[name]
    (replaced.fget if isinstance(replaced, property) else replaced).__qualname__ = func.__qualname__
    if install:
        setattr(holder, name, replaced)


_POOL = "tether.pooled.pool"
_DBAPI = "tether.steady.dbapi"
_NATIVE = "tether.steady.native"
_PROXIES = "tether.pooled.proxies"
_PERSISTENT = "tether.persistent.core"

#: name -> Variant. "none" is the unedited code every variant is compared with.
VARIANTS: dict[str, Variant] = {
    # -- tether.pooled: checkout (connection()) and checkin (_checkin) -------------------
    "pooled.leak-ref": Variant(
        "tether.pooled",
        "the weak reference with a callback to each proxy",
        "a proxy dropped without close() gives its connection back (leak recovery, "
        "`leaks.py`); without it the slot is lost until the pool closes",
        (
            (_POOL, "Pool", "connection", {"entry.ref = _ref(proxy, entry.on_lost)": "pass"}),
            (
                _POOL,
                "Pool",
                "_checkin",
                {
                    "entry.ref = None  # closed properly: its proxy's death means nothing now": "pass"  # noqa: E501
                },
            ),
        ),
        ("request", "cycle"),
    ),
    "pooled.counters": Variant(
        "tether.pooled",
        "the checkout and checkin counters (`next()` of two `itertools.count`)",
        "`stats()` counts checkouts and checkins without a lock",
        (
            (_POOL, "Pool", "connection", {"next(self._checkouts)": "pass"}),
            (_POOL, "Pool", "_checkin", {"next(self._checkins)": "pass"}),
        ),
        ("request", "cycle"),
    ),
    "pooled.fifo-and-hooks": Variant(
        "tether.pooled",
        "the waiter (and empty idle list), closed-pool and event-hook tests at checkout"
        " and checkin",
        "no barging past queued waiters (FIFO fairness), a checkin into a closed pool "
        "closes the connection, events and metrics see every checkout",
        (
            (
                _POOL,
                "Pool",
                "connection",
                {
                    "if not self._waiters and self._idle:": "if True:",
                    "if self._observed:": "if False:",
                },
            ),
            (
                _POOL,
                "Pool",
                "_checkin",
                {
                    "if self._checkin_work:": "if False:",
                    "if self._waiters and self._hand_over(entry, now):": "if False:",
                    "if self._waiters or self._closed:": "if False:",
                },
            ),
        ),
        ("request", "cycle"),
    ),
    "pooled.finish-checkout": Variant(
        "tether.pooled",
        "`finish_checkout()` at checkin (steady's layer API)",
        "the borrower's cursors and kept handles stop working (lease and generation "
        "bumped), settings it changed are put back, an open transaction is found",
        ((_POOL, "Pool", "_checkin", {"released = con.finish_checkout()": "released = True"}),),
        ("request", "cycle"),
    ),
    "pooled.checkin-clock": Variant(
        "tether.pooled",
        "the clock read, the expiry test and the idle stamp at checkin",
        "`max_lifetime`, `max_idle` and `ping_after` (a connection idle past it is "
        "pinged at its next checkout)",
        (
            (
                _POOL,
                "Pool",
                "_checkin",
                {
                    "now = monotonic()": "now = 0.0",
                    "if now < entry.expires_at and (not maxcached or len(self._idle) < self._idle_cap):": "if True:",  # noqa: E501
                    "entry.idle_since = now": "pass",
                    "entry.fresh = self._fresh_on_checkin": "pass",
                },
            ),
        ),
        ("request", "cycle"),
    ),
    "pooled.fresh-test": Variant(
        "tether.pooled",
        "the `entry.fresh` test at checkout",
        "a connection idle past `ping_after`, or expired, takes the slow path (ping, "
        "retire) instead of being handed out",
        (
            (
                _POOL,
                "Pool",
                "connection",
                {"if entry.fresh:  # recently used, not expired: no ping": "if True:"},
            ),
        ),
        ("request", "cycle"),
    ),
    "pooled.proxy-cursor": Variant(
        "tether.pooled",
        "the proxy's `cursor()`: its closed test and the holder passed to the cursor",
        "a cursor of a closed proxy is refused; `cursor.connection` answers the proxy "
        "(not the steady connection another borrower may hold next)",
        (
            (
                _PROXIES,
                "PooledDedicatedDBConnection",
                "cursor",
                {
                    "if con is None:": "if False:",
                    "return con.cursor_for(self, args, kwargs)": "return con.cursor()",
                },
            ),
        ),
    ),
    # -- tether.steady: the cursor and its statements ----------------------------------
    "steady.execute-rule": Variant(
        "tether.steady",
        "`execute()`'s hot-path checks: settled, cursor generation, checks due, clock",
        "a statement is sent only on a session known good and idle in autocommit mode; "
        "anything else goes through the full rule (reopen outside a transaction, never "
        "inside, never re-run a statement that may have reached the server)",
        (
            (
                _NATIVE,
                "NativeCursor",
                "execute",
                {
                    "if not settled or self._steady_generation != state.generation:": "if False:",
                    "now = monotonic()": "now = 0.0",
                    "if con._execute_checks or (": "if False and (",
                },
            ),
        ),
    ),
    "steady.left-busy": Variant(
        "tether.steady",
        "the read after each statement (the adapter's `left_busy`) and the usage count",
        "SQL that opened a transaction (`BEGIN`) or left autocommit mode is seen, so the "
        "next statement is not re-run after a loss as if it were outside a transaction",
        (
            (
                _NATIVE,
                "NativeCursor",
                "execute",
                {
                    "state.usage += 1": "pass",
                    "elif con._left_busy(raw_con):": "elif False:",
                },
            ),
        ),
    ),
    "steady.socket-look": Variant(
        "tether.steady",
        "the socket look before a statement that follows a pause (`_still_there`)",
        "a statement after a server restart or an idle kill goes to a new session "
        "instead of failing",
        (
            (
                _NATIVE,
                "NativeCursor",
                "execute",
                {
                    "now - state.alive_at >= _core.ALIVE_BYPASS and not con._still_there()": "False",  # noqa: E501
                },
            ),
        ),
        ("request-gap",),
    ),
    "steady.fetch-check": Variant(
        "tether.steady",
        "`fetchone()`'s generation test",
        "rows of a session that was reopened since the cursor's execute are refused "
        "(they would be another session's)",
        (
            (
                _NATIVE,
                "NativeCursor",
                "fetchone",
                {
                    "if self._steady_generation != self._steady_state.generation:": "if False:",
                },
            ),
        ),
    ),
    "steady.cursor-object": Variant(
        "tether.steady",
        "the steady cursor itself: `cursor()` returns the driver's cursor",
        "everything per statement: the rule above, kept cursors refused after checkin, "
        "results of an old session refused, `cursor.connection` answering tether",
        (
            (
                _DBAPI,
                "SteadyDBConnection",
                "cursor_for",
                {"state = self._state": "return self._raw.cursor(*args, **kwargs)"},
            ),
        ),
        ("request", "request-gap"),
    ),
    "steady.connection-check": Variant(
        "tether.steady",
        "the native cursor's `connection`: the test whether tether is calling the driver",
        "`cursor.connection` answers tether's connection (a kept one cannot reach the next "
        "borrower's session), while psycopg's own code, which reads it on every statement, "
        "gets the driver's",
        (
            (
                _NATIVE,
                "NativeCursor",
                "connection",
                {
                    "if self._steady_inside:": "if True:",
                },
            ),
        ),
    ),
    # -- tether.persistent: connection() and close() of a thread's connection ------------
    "persistent.ping-clock": Variant(
        "tether.persistent",
        "the clock read and idle test of `ping_after` at `connection()`",
        "a connection unused for `ping_after` seconds is pinged (bounded by "
        "`checkout_timeout`) before it is handed out",
        ((_PERSISTENT, "_Persistent", "connection", {"if con.pings_on_request:": "if False:"}),),
        ("request", "cycle"),
    ),
    "driver.dict-read": Variant(
        "driver",
        "psycopg's own code on a connection whose `__dict__` tether read once (added)",
        "tether's forwarding classes pass every driver attribute through: it reads the "
        "connection's instance attributes once (`instance_dict`, which keeps CPython 3.11 "
        "from leaving the dict split, 542 instructions an attribute read instead of 290)",
        adds_dict_read=True,
        workloads=("request", "request-gap"),
    ),
    "steady.on-driver": Variant(
        "tether.steady",
        "all of tether.steady per request: the statements run on `dbapi_connection`",
        "what is left is not tether code run per request: psycopg's own attribute reads on "
        "a connection whose `__dict__` tether read once (`instance_dict`), measured here",
        on_driver=True,
        workloads=("request", "request-gap"),
    ),
}


def apply(name: str) -> Variant | None:
    """Take variant ``name``'s piece out (``"none"``: nothing); the variant."""
    if name == "none":
        return None
    variant = VARIANTS[name]
    for module, owner, function, lines in variant.edits:
        edit(module, owner, function, lines)
    return variant


def check() -> list[str]:
    """Every variant's edits, made without installing them: what no longer applies.

    The benchmark session runs this first (``python ablation.py --check``), so a
    change to a hot-path function that a variant edits fails the quick run at
    once instead of leaving the ledger phase with an error row.
    """
    problems = []
    for name, variant in VARIANTS.items():
        for module, owner, function, lines in variant.edits:
            try:
                edit(module, owner, function, lines, install=False)
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return problems


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--check"]:
        print("usage: python ablation.py --check")
        sys.exit(2)
    found = check()
    for problem in found:
        print(problem)
    print(f"ablation: {len(VARIANTS)} variants, {len(found)} no longer apply")
    sys.exit(1 if found else 0)
