"""What a user installing or publishing a tether distribution relies on, checked on the sources
and on the built archives.

Each distribution declares every other distribution it imports, and imports
only the public modules of the others (a ``_private`` module may change in any
release, and only its own package is released with it). Every sdist and wheel
carries the MIT license and metadata that says what is supported: the Pythons
the test sessions run on, plain ``psycopg`` in the ``psycopg`` extra.

``nox -s build`` runs this file after building ``dist/`` (``TETHER_DIST``) and
passes the tested Pythons (``TETHER_PYTHONS``, from the noxfile). A missing
``dist/`` is a failure, not a skip.
"""

from __future__ import annotations

import ast
import email.parser
import email.policy
import os
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the build session runs on the newest Python
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LICENSE = (ROOT / "LICENSE").read_text()


@dataclass(frozen=True)
class Distribution:
    """One pyproject.toml of the repository and the ``tether.<package>`` it ships."""

    directory: Path
    project: dict[str, object]

    @property
    def name(self) -> str:
        return str(self.project["name"])

    @property
    def package(self) -> str:
        (package,) = (self.directory / "src" / "tether").iterdir()
        return package.name

    def requirements(self, extra: str | None = None) -> set[str]:
        """Canonical names of the distributions required, by an extra if given."""
        if extra is None:
            specs = self.project.get("dependencies", [])
        else:
            specs = self.project.get("optional-dependencies", {}).get(extra, [])  # type: ignore[attr-defined]
        return {canonicalize_name(Requirement(spec).name) for spec in specs}  # type: ignore[attr-defined]

    @property
    def extras(self) -> dict[str, list[str]]:
        return dict(self.project.get("optional-dependencies", {}))  # type: ignore[call-overload]

    def sources(self, *dirs: str) -> Iterator[Path]:
        for sub in dirs:
            yield from sorted((self.directory / sub).rglob("*.py"))


DISTRIBUTIONS = [
    Distribution(path.parent, tomllib.loads(path.read_text())["project"])
    for path in sorted([*ROOT.glob("packages/*/pyproject.toml"), ROOT / "harness/pyproject.toml"])
]
#: tether.<package> -> the distribution that ships it.
SHIPPED_BY = {dist.package: dist for dist in DISTRIBUTIONS}
IDS = [dist.name for dist in DISTRIBUTIONS]


def tether_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import of ``tether.*`` in a file, names included:
    ``from tether.pooled import PooledDB`` gives ``tether.pooled.PooledDB``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("tether."):
                yield node.lineno, name


def test_the_sources_are_found() -> None:
    """The checks below see every distribution and its imports (a wrong glob checks nothing)."""
    assert set(SHIPPED_BY) == {
        "simple_pool", "steady", "persistent", "pooled", "frameworks", "harness",
    }  # fmt: skip
    pooled = SHIPPED_BY["pooled"]
    assert any(
        name.startswith("tether.steady.") for path in pooled.sources("src")
        for _, name in tether_imports(path)
    )  # fmt: skip


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_every_imported_tether_distribution_is_declared(dist: Distribution) -> None:
    """A module of ``dist`` that imports ``tether.X`` needs X's distribution in ``dependencies``,
    or, inside a subpackage named like an extra (``tether.harness.chaos``), in that extra."""
    missing = []
    for path in dist.sources("src"):
        parts = path.relative_to(dist.directory / "src").with_suffix("").parts
        extra = parts[2] if len(parts) > 3 and parts[2] in dist.extras else None
        declared = dist.requirements() | (dist.requirements(extra) if extra else set())
        for line, name in tether_imports(path):
            package = name.split(".")[1]
            if package == dist.package:
                continue
            assert package in SHIPPED_BY, f"{path}:{line}: {name}: no distribution ships it"
            needed = canonicalize_name(SHIPPED_BY[package].name)
            if needed not in declared:
                where = f"[{extra}] or dependencies" if extra else "dependencies"
                missing.append(f"{path.relative_to(ROOT)}:{line}: {name} needs {needed} in {where}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_no_private_module_of_another_package_is_imported(dist: Distribution) -> None:
    """Sources and tests import only public names of the other packages: no ``_name`` part
    after ``tether.<other>`` (dunders such as ``__version__`` are public)."""
    private = []
    for path in dist.sources("src", "tests", "chaos"):
        for line, name in tether_imports(path):
            package, *rest = name.split(".")[1:]
            if package != dist.package and any(
                part.startswith("_") and not part.endswith("__") for part in rest
            ):
                private.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not private, "\n".join(private)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_each_distribution_has_the_license(dist: Distribution) -> None:
    assert (dist.directory / "LICENSE").read_text() == LICENSE
    assert dist.project["license"] == "MIT"
    assert dist.project["license-files"] == ["LICENSE"]


def test_the_license_is_mit_by_the_tether_authors() -> None:
    assert LICENSE.startswith("MIT License\n\nCopyright (c) 2026 the tether authors\n")


# -- the built archives -----------------------------------------------------------------------


def _dist_dir() -> Path:
    value = os.environ.get("TETHER_DIST")
    assert value, "TETHER_DIST is not set: run `nox -s build`, which builds dist/ and runs this"
    return Path(value)


def _pythons() -> list[str]:
    value = os.environ.get("TETHER_PYTHONS")
    assert value, "TETHER_PYTHONS is not set: run `nox -s build`"
    return value.split(",")


def _archives(dist: Distribution) -> tuple[zipfile.ZipFile, tarfile.TarFile, str]:
    stem = f"{dist.name.replace('-', '_')}-{dist.project['version']}"
    wheels = sorted(_dist_dir().glob(f"{stem}-*.whl"))
    assert len(wheels) == 1, f"one wheel of {stem} expected in dist/, found {wheels}"
    return zipfile.ZipFile(wheels[0]), tarfile.open(_dist_dir() / f"{stem}.tar.gz"), stem


def _metadata(wheel: zipfile.ZipFile, stem: str) -> Message:
    text = wheel.read(f"{stem}.dist-info/METADATA").decode()
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_sdist_and_wheel_carry_the_license(dist: Distribution) -> None:
    wheel, sdist, stem = _archives(dist)
    assert wheel.read(f"{stem}.dist-info/licenses/LICENSE").decode() == LICENSE
    member = sdist.extractfile(f"{stem}/LICENSE")
    assert member is not None
    assert member.read().decode() == LICENSE


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_the_wheel_ships_its_package_typed_in_the_namespace(dist: Distribution) -> None:
    """``tether`` is a namespace (PEP 420): a wheel with ``tether/__init__.py`` would hide
    every other tether package installed beside it."""
    wheel, _, _ = _archives(dist)
    names = wheel.namelist()
    assert "tether/__init__.py" not in names
    assert f"tether/{dist.package}/__init__.py" in names
    assert f"tether/{dist.package}/py.typed" in names
    assert {name.split("/")[1] for name in names if name.startswith("tether/")} == {dist.package}


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_the_metadata_says_what_is_supported_and_tested(dist: Distribution) -> None:
    wheel, _, stem = _archives(dist)
    metadata = _metadata(wheel, stem)
    pythons = _pythons()
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == f">={pythons[0]}"
    classifiers = set(metadata.get_all("Classifier") or [])
    tested = {c for c in classifiers if c.startswith("Programming Language :: Python :: 3.")}
    assert tested == {f"Programming Language :: Python :: {v}" for v in pythons}
    assert {
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Database",
        "Typing :: Typed",
    } <= classifiers
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    if dist.package != "harness":  # the harness starts servers: POSIX :: Linux
        assert {"Operating System :: OS Independent", "Topic :: Database :: Front-Ends"} <= (
            classifiers
        )


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=IDS)
def test_the_psycopg_extra_leaves_the_implementation_to_the_application(
    dist: Distribution,
) -> None:
    """psycopg's maintainers ask libraries for plain ``psycopg``: the application chooses
    ``psycopg[binary]``, ``[c]`` or the pure-Python implementation."""
    wheel, _, stem = _archives(dist)
    requirements = [Requirement(r) for r in _metadata(wheel, stem).get_all("Requires-Dist") or []]
    psycopg = [r for r in requirements if r.name == "psycopg" and "psycopg" in str(r.marker)]
    if dist.package == "harness":  # a test tool, not a library: it picks the binary one
        assert not psycopg
        return
    assert [(r.extras, str(r.marker)) for r in psycopg] == [(set(), 'extra == "psycopg"')]
