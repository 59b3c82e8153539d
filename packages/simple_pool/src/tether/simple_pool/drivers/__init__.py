"""Driver adapters: one class per database driver, chosen from the creator.

``adapter_for(creator)`` picks the adapter from what the creator is (the
module, or the module a connect function belongs to); ``driver=`` overrides
the choice with a name (``"psycopg"``), an adapter class or an instance.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from .base import DriverAdapter

__all__ = ["DriverAdapter", "adapter_for", "register"]

_REGISTRY: dict[str, type[DriverAdapter]] = {}


def register(cls: type[DriverAdapter]) -> type[DriverAdapter]:
    """Make an adapter class known by its ``name`` and the module names it serves."""
    _REGISTRY[cls.name] = cls
    for module_name in cls.modules:
        _REGISTRY[module_name] = cls
    return cls


def adapter_for(
    creator: ModuleType | Callable[..., Any],
    driver: str | DriverAdapter | type[DriverAdapter] | None = None,
) -> DriverAdapter:
    """The adapter for ``creator``: chosen by ``driver`` if given, else from the creator."""
    if isinstance(driver, DriverAdapter):
        return driver
    if isinstance(driver, type) and issubclass(driver, DriverAdapter):
        return driver(creator)
    if isinstance(driver, str):
        try:
            return _REGISTRY[driver](creator)
        except KeyError:
            known = ", ".join(sorted({cls.name for cls in _REGISTRY.values()}))
            raise ValueError(f"driver: unknown driver {driver!r}; known: {known}") from None
    if driver is not None:
        raise TypeError(
            f"driver: expected a name, a DriverAdapter or None, got {type(driver).__name__}"
        )
    return _REGISTRY.get(_module_name(creator), DriverAdapter)(creator)


def _module_name(creator: object) -> str:
    if isinstance(creator, ModuleType):
        return creator.__name__.split(".")[0]
    name = getattr(creator, "__module__", None)
    if not isinstance(name, str):
        name = getattr(getattr(creator, "func", None), "__module__", None)
    return name.lstrip("_").split(".")[0] if isinstance(name, str) else ""
