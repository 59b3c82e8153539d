"""Who may use what: the layers above tether.steady use only its declared API.

tether.pooled and tether.persistent are released separately from
tether.steady (``tether-steady>=0.1,<0.2``), so they may rely only on what
steady declares: names without a leading underscore, documented in its
README ("Layer API"). A private name of steady used up there would break
them on a steady patch release that renames it.

:func:`private_uses` finds such uses in a package's source, so each layer's
tests can fail when one creeps in. It reads the source (``ast``), it does not
run it, so it cannot know the type of every expression; it flags

* ``x._name`` where ``_name`` is one of steady's private names and the
  package itself does not define a name of that spelling (its own classes'
  attributes and methods), or where ``x`` is spelled like a steady object
  (``con``, ``entry.con``, ``cursor``...), whatever the name, except the
  ``_tether_*`` attributes a layer keeps on its own subclasses;
* ``from tether.steady... import _name``.

``self.``/``cls.`` accesses are the package's own business and not looked at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["private_names", "private_uses"]

#: The last part of an expression that names a steady connection or cursor in the layers.
STEADY_SPELLINGS = frozenset({"con", "cursor", "steady"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _sources(root: Path) -> Iterable[tuple[Path, ast.AST]]:
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _defined(trees: Iterable[ast.AST]) -> set[str]:
    """The private names a body of source defines: methods, class attributes, ``self._x = ...``."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, (ast.Name, ast.arg)):
                names.add(node.id if isinstance(node, ast.Name) else node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
    return {name for name in names if _private(name)}


def private_names() -> frozenset[str]:
    """Every private name tether.steady defines (its layer API is everything else)."""
    here = Path(__file__)
    return frozenset(_defined(tree for path, tree in _sources(here.parent) if path != here))


def _spelled_like_steady(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in STEADY_SPELLINGS
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_") in STEADY_SPELLINGS
    return False


def private_uses(package_dir: str | Path) -> list[str]:
    """Uses of steady's private names in the package at ``package_dir``, as ``file:line: text``."""
    root = Path(package_dir)
    sources = list(_sources(root))
    steady = private_names()
    own = _defined(tree for _, tree in sources)
    found: list[str] = []
    for path, tree in sources:
        for node in ast.walk(tree):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tether.steady"):
                found.extend(
                    f"{where}: imports {node.module}.{alias.name}"
                    for alias in node.names
                    if _private(alias.name)
                )
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                continue
            if isinstance(receiver, ast.Call) and ast.unparse(receiver.func) == "super":
                continue
            by_name = node.attr in steady and node.attr not in own
            by_receiver = _spelled_like_steady(receiver) and not node.attr.startswith("_tether_")
            if by_name or by_receiver:
                found.append(f"{where}: {ast.unparse(node)}")
    return sorted(found)
