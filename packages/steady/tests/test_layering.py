"""The layer API check (tether.steady.layering) finds what it promises to find."""

from __future__ import annotations

from pathlib import Path

from tether.steady.layering import private_names, private_uses


def test_the_session_state_is_private_to_steady() -> None:
    names = private_names()
    assert {"_state", "_raw", "_run", "_reopen", "_ping_check"} <= names
    # The checker lets a layer keep `_tether_*` attributes on its own subclasses:
    # steady must never define one itself, or that exemption would hide a use of it.
    assert not [name for name in names if name.startswith("_tether_")]


def test_private_uses_flags_steady_internals(tmp_path: Path) -> None:
    package = tmp_path / "layer"
    package.mkdir()
    (package / "ok.py").write_text(
        "from tether.steady import SteadyBase\n"
        "class Pool:\n"
        "    def __init__(self):\n"
        "        self._raw = None\n"
        "        self._tether_mark = 1\n"
        "    def give_back(self, con, entry, other):\n"
        "        con._tether_mark = 2\n"  # the layer's own attribute on its own subclass
        "        other._raw = 3\n"  # the package defines _raw itself, on another object
        "        return con.transaction_open() or entry.con.connected\n"
    )
    assert private_uses(package) == []
    (package / "bad.py").write_text(
        "from tether.steady.core import _describe\n"
        "def f(con, entry, pool):\n"
        "    con._closed\n"  # spelled like a steady connection
        "    entry.con._in_transaction()\n"
        "    pool._state.settled\n"  # steady's own private name, not the package's
    )
    uses = private_uses(package)
    assert uses == [
        "layer/bad.py:1: imports tether.steady.core._describe",
        "layer/bad.py:3: con._closed",
        "layer/bad.py:4: entry.con._in_transaction",
        "layer/bad.py:5: pool._state",
    ], uses
