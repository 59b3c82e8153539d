"""Every task of the tether monorepo: ``nox -s <session>``.

nox -s demo        the main job: a threaded workload, per-request connects vs pools
nox -s ci          everything CI runs: provision, lint, typecheck, build, tests, chaos, demo,
                   bench --quick
nox -s tests       each package installed alone (only its declared deps) and tested, on every
                   Python in PYTHONS (one: nox -s "tests-3.11(package='pooled')", or -p 3.11);
                   `nox -s tests-all` is the same; ci runs the oldest and the newest Python
nox -s lint        ruff, and actionlint over .github/workflows
nox -s typecheck   mypy --strict, as the oldest and the newest Python see the code
nox -s build       every sdist and wheel, twine check, each wheel installed alone and imported
nox -s chaos       the chaos suite: real faults through toxiproxy and server restarts
nox -s bench       benchmarks against DBUtils, psycopg_pool, SQLAlchemy, peewee
nox -s provision   install PostgreSQL, MariaDB, libpq-dev, PgBouncer (apt) and toxiproxy (go)
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nox

#: uv, not a fallback to pip: the installs pass uv's options (:func:`_fresh`), and the
#: README's commands install uv beside nox.
nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True  # a Python we claim to support must be there
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
TOOLS = ROOT / ".tether" / "bin"  # tools built for this checkout (toxiproxy, actionlint)
DRIVERS = "psycopg,pygresql,pymysql"
#: The `psycopg` extras ask for plain psycopg (the application picks the implementation);
#: tether's own tests, demo and benchmarks pick the binary one.
PSYCOPG_IMPLEMENTATION = "psycopg[binary]>=3.1"
#: Every Python the packages support (requires-python, classifiers: tests/test_packaging.py
#: checks they agree) and the test sessions run on.
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
# Each package and the packages it depends on, bottom layer first.
PACKAGES = {
    "simple_pool": ["simple_pool"],
    "steady": ["simple_pool", "steady"],
    "persistent": ["simple_pool", "steady", "persistent"],
    "pooled": ["simple_pool", "steady", "pooled"],
    "frameworks": ["simple_pool", "steady", "persistent", "pooled", "frameworks"],
}
#: Extras beyond the drivers, per package.
EXTRAS = {"frameworks": "sqlalchemy,django,peewee", "pooled": "prometheus,otel"}
#: What a package's tests need beyond the package: the OpenTelemetry SDK's in-memory
#: reader for the exporters, mypy for the typed user program.
TEST_DEPS = {"pooled": ["opentelemetry-sdk>=1.23", "mypy>=1.10"], "persistent": ["mypy>=1.10"]}
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.12.0"  # pinned: CI builds the same server every time
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
ACTIONLINT_VERSION = "v1.7.12"  # pinned, like toxiproxy
APT_PACKAGES = ["postgresql", "libpq-dev", "mariadb-server", "gcc", "pgbouncer", "valgrind"]


#: Every tether distribution's name, for :func:`_fresh`.
TETHER_DISTRIBUTIONS = [
    "tether-simple-pool", "tether-steady", "tether-persistent", "tether-pooled",
    "tether-frameworks", "tether-harness",
]  # fmt: skip


def _fresh() -> list[str]:
    """uv options that install tether's own distributions from this checkout, never a cache.

    Every tether distribution is version 0.1.0 between releases, and uv caches a wheel it
    finds in a ``--find-links`` directory by its file name, as if it were PyPI's: on a
    machine that ran CI before, ``nox -s build`` installed last run's ``tether-simple-pool``
    under this run's ``tether-steady`` (measured with a two-file package: the second build's
    new name was missing from the second venv). A reused nox venv keeps an installed
    0.1.0 the same way. ``--reinstall-package`` rebuilds and reinstalls each one (it implies
    ``--refresh-package``).
    """
    return [option for name in TETHER_DISTRIBUTIONS for option in ("--reinstall-package", name)]


def _package_specs(names: list[str]) -> list[str]:
    """uv specs of local packages, each with the driver extras, and psycopg's implementation.

    With :func:`_fresh`'s options: the packages are always built from this checkout.
    """
    return [
        *_fresh(),
        *(
            f"{ROOT / 'packages' / name}[{','.join(filter(None, [DRIVERS, EXTRAS.get(name)]))}]"
            for name in names
        ),
        PSYCOPG_IMPLEMENTATION,
    ]


def _select_pyenv_pythons() -> None:
    """Make pyenv's ``python3.X`` shims answer for every version in :data:`PYTHONS`.

    Under pyenv, ``python3.9`` on PATH is a shim that runs only the versions
    pyenv has selected (``pyenv global``, ``.python-version``,
    ``PYENV_VERSION``), so nox would find 3.9 missing although it is
    installed. Selecting the newest installed patch of each version, after the
    ones already selected, changes nothing else (``python3`` stays what it was).
    Without pyenv (a CI runner with setup-python) this does nothing.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    try:
        root, current = (
            subprocess.run([pyenv, cmd], capture_output=True, text=True, check=True).stdout.strip()
            for cmd in ("root", "version-name")
        )
        installed = os.listdir(Path(root) / "versions")
    except (OSError, subprocess.CalledProcessError):
        return
    selected = current.split(":") if current else []
    for minor in PYTHONS:
        patches = [v for v in installed if re.fullmatch(re.escape(minor) + r"\.\d+", v)]
        if patches:
            selected.append(max(patches, key=lambda v: int(v.rsplit(".", 1)[1])))
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(selected))


_select_pyenv_pythons()


def _test_env() -> dict[str, str]:
    env = {"TETHER_TOXIPROXY_SERVER": str(TOOLS / "toxiproxy-server")}
    for name in ("CI", "TETHER_PG_DSN", "TETHER_MARIADB_DSN", "TETHER_USE_DOCKER"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


# -- provisioning -------------------------------------------------------------------------------


def _missing_apt_packages() -> list[str]:
    missing = []
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and not shutil.which("initdb"):
        missing.append("postgresql")
    if not shutil.which("pg_config"):
        missing.append("libpq-dev")  # PyGreSQL builds against it
    if not (shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")):
        missing.append("mariadb-server")
    if not shutil.which("gcc"):
        missing.append("gcc")
    if not (shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")):
        missing.append("pgbouncer")
    if not shutil.which("valgrind"):
        missing.append("valgrind")  # the benchmarks' instructions phase (callgrind)
    return missing


def _go() -> str | None:
    return shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.path.exists(p)), None
    )


def go_tool(session: nox.Session, module: str, version: str, dest: Path) -> Path:
    """``dest``, built from the pinned Go ``module@version`` with ``go install`` if missing."""
    if dest.exists():
        session.log(f"{dest.name}: present at {dest}")
        return dest
    go = _go()
    if go is None:
        session.error(f"{dest.name} needs Go >= 1.22 to build (go install); no `go` found")
    session.log(f"{dest.name}: go install {module}@{version} -> {dest}")
    gobin = TOOLS / "gobuild"
    gobin.mkdir(parents=True, exist_ok=True)
    session.run(
        go, "install", f"{module}@{version}",
        external=True, env={"GOBIN": str(gobin), "CGO_ENABLED": "0"},
    )  # fmt: skip
    (gobin / module.rsplit("/", 1)[1]).rename(dest)  # go names the binary after the package
    return dest


def provision_machine(session: nox.Session) -> None:
    """Install the database servers and toxiproxy if they are missing, saying what was done."""
    missing = _missing_apt_packages()
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            session.error(
                f"missing system packages {missing}: install them with"
                f" `apt-get install -y {' '.join(APT_PACKAGES)}` (needs root on Debian/Ubuntu)"
            )
        session.log(f"provision: apt-get install {' '.join(missing)}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=env)
    else:
        session.log("provision: PostgreSQL, MariaDB, libpq-dev, gcc and pgbouncer are installed")
    go_tool(session, TOXIPROXY_MODULE, TOXIPROXY_VERSION, TOOLS / "toxiproxy-server")


@nox.session(venv_backend="none")
def provision(session: nox.Session) -> None:
    """Install PostgreSQL, MariaDB, libpq-dev (apt) and the toxiproxy server (go install)."""
    provision_machine(session)


# -- quality ----------------------------------------------------------------------------------


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree; actionlint (built with Go, pinned) over the CI workflow."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # A merge that kept its conflict markers (a CHANGELOG once did): no linter reads Markdown.
    git = shutil.which("git")
    markers = (
        git
        and subprocess.run(
            [git, "grep", "-n", "-E", "^(<<<<<<<|>>>>>>>) "],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    if markers:
        session.error(f"merge conflict markers left in the tree:\n{markers}")
    actionlint = go_tool(
        session, ACTIONLINT_MODULE, ACTIONLINT_VERSION, TOOLS / f"actionlint-{ACTIONLINT_VERSION}"
    )
    # Without shellcheck and pyflakes: actionlint runs them only when they are on PATH, and
    # the same file must give the same verdict on every machine.
    session.run(
        str(actionlint), "-shellcheck=", "-pyflakes=",
        *sorted(glob.glob(str(ROOT / ".github" / "workflows" / "*.yml"))), external=True,
    )  # fmt: skip


#: mypy checks the code as the oldest and the newest supported Python see it, each on that
#: Python (the newest mypy no longer targets 3.9; the one the 3.9 venv resolves does).
TYPECHECK_PYTHONS = [PYTHONS[0], PYTHONS[-1]]


@nox.session(python=TYPECHECK_PYTHONS)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package's sources, the harness, and a typed user program.

    For this Python. The exporters' dependencies (prometheus-client, opentelemetry-api)
    come with tether-pooled's extras (EXTRAS).
    """
    session.install(
        "mypy>=1.10", *_package_specs(list(PACKAGES)), f"{ROOT / 'harness'}[chaos,docker]"
    )
    session.run(
        "mypy", "--python-version", str(session.python),
        "packages/simple_pool/src/tether/simple_pool",
        "packages/steady/src/tether/steady",
        "packages/persistent/src/tether/persistent",
        "packages/pooled/src/tether/pooled",
        "packages/frameworks/src/tether/frameworks",
        "harness/src/tether/harness",
        "packages/pooled/tests/typed/user_program.py",  # what a user's code may lean on
        "packages/persistent/tests/typed/persistent_program.py",
        "packages/pooled/tests/typed/pooled_pg_program.py",  # PyGreSQL's classic API
        "packages/persistent/tests/typed/persistent_pg_program.py",
    )  # fmt: skip


#: Every distribution of the repository, by its directory.
DISTRIBUTIONS = {name: ROOT / "packages" / name for name in PACKAGES}
DISTRIBUTIONS["harness"] = ROOT / "harness"
#: Modules that import what only an extra installs: left out of the import check of a wheel
#: installed alone, and imported when it is installed with IMPORT_EXTRAS.
OPTIONAL_MODULES = {
    "pooled": ["tether.pooled.metrics.otel", "tether.pooled.metrics.prometheus"],
    "frameworks": ["tether.frameworks." + name for name in ("django", "peewee", "sqlalchemy")],
}
IMPORT_EXTRAS = {
    "pooled": "prometheus,otel",
    "frameworks": "sqlalchemy,django,peewee,psycopg,pymysql",
    "harness": "chaos,docker",
}


@nox.session
def build(session: nox.Session) -> None:
    """Build every sdist and wheel, check them, install each wheel alone and import it.

    The wheels are built from the sdists (``uv build``), so a file missing from an sdist
    fails here. ``twine check --strict`` checks the metadata PyPI renders. Each wheel
    then goes into a fresh venv with nothing but its declared dependencies (the tether ones
    from ``dist/`` only; the layers need nothing from PyPI), and every module of every
    installed tether package is imported; then once more with its extras.
    ``tests/test_packaging.py`` checks the archives (LICENSE, metadata) and the imports.
    """
    session.install(
        "uv>=0.5", "twine>=6.1", "packaging>=24", "pytest>=8", "tomli; python_version<'3.11'"
    )
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for path in DISTRIBUTIONS.values():
        session.run("uv", "build", "--quiet", "--out-dir", str(dist), str(path))
    archives = sorted(map(str, [*dist.glob("*.whl"), *dist.glob("*.tar.gz")]))
    session.run("twine", "check", "--strict", *archives)
    with tempfile.TemporaryDirectory(prefix="tether-build-") as tmp:
        (Path(tmp) / "import_all.py").write_text(_IMPORT_ALL)
        for name in DISTRIBUTIONS:
            (wheel,) = dist.glob(f"tether_{name}-*.whl")
            # The layers' only dependencies are each other: from dist/ alone, never from an
            # index (where a stranger's distribution of the same name could be found).
            # A wheel installs the layers below it without their extras: their optional
            # modules are left out too (frameworks brings pooled, not pooled[otel]).
            others = [m for dep, ms in OPTIONAL_MODULES.items() if dep != name for m in ms]
            skip = [*OPTIONAL_MODULES.get(name, []), *others]
            alone = Path(tmp) / name
            _install_and_import(session, alone, str(wheel), skip, index=name == "harness")
            if name in IMPORT_EXTRAS:
                spec = f"{wheel}[{IMPORT_EXTRAS[name]}]"
                extras = Path(tmp) / f"{name}-extras"
                _install_and_import(session, extras, spec, others, index=True)
    session.run(
        "pytest", "-p", "no:cacheprovider", str(ROOT / "tests"), *session.posargs,
        env={"TETHER_DIST": str(dist), "TETHER_PYTHONS": ",".join(PYTHONS)},
    )  # fmt: skip


_IMPORT_ALL = """# Imports every module of every installed tether package but the prefixes given.
import importlib, pkgutil, sys
import tether
skip = tuple(sys.argv[1:])
names = []
def walk(path, prefix):
    for info in pkgutil.iter_modules(path, prefix):
        if info.name.startswith(skip):
            continue
        module = importlib.import_module(info.name)
        names.append(info.name)
        if info.ispkg:
            walk(module.__path__, info.name + ".")
walk(tether.__path__, "tether.")
print(f"imported {len(names)} modules:", " ".join(sorted(names)))
"""


def _install_and_import(
    session: nox.Session, venv: Path, spec: str, skip: list[str], *, index: bool
) -> None:
    """Install ``spec`` into a fresh venv and import every tether module there.

    Tether distributions come from ``dist/`` (``--find-links``); with ``index``
    the others come from PyPI, without it nothing may.
    """
    python = str(venv / "bin" / "python")
    session.run("uv", "venv", "--quiet", "--python", str(Path(session.bin) / "python"), str(venv))
    sources = ["--find-links", str(ROOT / "dist"), *([] if index else ["--no-index"])]
    session.run("uv", "pip", "install", "--quiet", "--python", python, *sources, *_fresh(), spec)
    session.run(python, str(venv.parent / "import_all.py"), *skip, external=True)


# -- tests -------------------------------------------------------------------------------------


TESTED = [*PACKAGES, "harness"]
#: The Pythons ``nox -s ci`` tests on: the oldest and the newest. All five would bring CI
#: (30 minutes at most) to an estimated 26 on an idle 2-core machine, too close (measured
#: there: the six test sessions take 3.2 minutes on 3.11; ci took 10 with one Python).
#: ``nox -s tests`` (or ``tests-all``) runs every Python.
CI_PYTHONS = [PYTHONS[0], PYTHONS[-1]]
TEST_SESSIONS = [f"tests-{python}(package='{name}')" for python in CI_PYTHONS for name in TESTED]


@nox.session(python=PYTHONS)
@nox.parametrize("package", TESTED)
def tests(session: nox.Session, package: str) -> None:
    """One package, installed with only its declared dependencies, against real servers."""
    if package == "harness":
        session.install(*_fresh(), f"{ROOT / 'harness'}")
        path = ROOT / "harness" / "tests"
    else:
        # Non-editable installs: the tests import what a user's pip would install.
        session.install(
            *_package_specs(PACKAGES[package]), f"{ROOT / 'harness'}", *TEST_DEPS.get(package, [])
        )
        path = ROOT / "packages" / package / "tests"
    session.run(
        "pytest", "-n", os.environ.get("TETHER_WORKERS", "auto"), "--import-mode=importlib",
        str(path), *session.posargs, env=_test_env(),
    )  # fmt: skip


@nox.session(name="tests-all", venv_backend="none")
def tests_all(session: nox.Session) -> None:
    """The test sessions of every package on every supported Python (ci: oldest and newest)."""
    for python in PYTHONS:
        for name in TESTED:
            session.notify(f"tests-{python}(package='{name}')", posargs=session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos suite: faults through toxiproxy and server restarts under load.

    Provisions first, as ``nox -s ci`` does: on a fresh checkout (a user's CI) it
    installs the database servers and libpq-dev with apt when they are missing
    (as root) and builds the pinned toxiproxy server into ``.tether/bin``.
    Against external servers (``TETHER_PG_DSN`` and ``TETHER_MARIADB_DSN``) and
    toxiproxy (``TETHER_TOXIPROXY_URL``) nothing is provisioned.
    """
    external = ("TETHER_PG_DSN", "TETHER_MARIADB_DSN", "TETHER_TOXIPROXY_URL")
    if not all(os.environ.get(name) for name in external):
        provision_machine(session)  # before the installs: PyGreSQL builds against libpq-dev
    session.install(
        *_package_specs(["simple_pool", "steady", "persistent", "pooled"]),
        f"{ROOT / 'harness'}[chaos]",
    )  # the results (report.md, chaos.json, timeline PNGs) go to results/chaos/
    session.run(
        "pytest", "-n", os.environ.get("TETHER_WORKERS", "auto"), "--import-mode=importlib",
        str(ROOT / "harness" / "chaos"), *session.posargs, env=_test_env(),
    )  # fmt: skip


#: The peers tether is measured against, pinned to the versions the issue names.
BENCH_PEERS = ["DBUtils==3.2.0", "psycopg_pool>=3.3,<3.4", "SQLAlchemy>=2,<3", "peewee>=4,<5"]


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers, as ratios; ``-- --quick`` for a smoke run."""
    session.install(
        *_package_specs(["simple_pool", "steady", "persistent", "pooled"]),
        f"{ROOT / 'harness'}",
        *BENCH_PEERS,
        "matplotlib>=3.8",
    )
    # The ledger's variants still apply to the installed code (fails at once if not).
    session.run("python", str(ROOT / "benchmarks" / "ablation.py"), "--check")
    session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a threaded request loop, new connection per request vs tether's pools.

    ``nox -s demo -- --dsn postgresql://user:pw@host/db`` runs it on a real server.
    """
    session.install(*_package_specs(["simple_pool", "steady", "persistent", "pooled"]))
    session.run("python", str(ROOT / "demo" / "demo.py"), *session.posargs)


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """Everything CI runs, in order; provisions the machine first."""
    provision_machine(session)
    # notify() takes exact names: "tests" alone would queue only its first parametrization.
    typechecks = [f"typecheck-{python}" for python in TYPECHECK_PYTHONS]
    for name in ("lint", *typechecks, "build", *TEST_SESSIONS, "chaos", "demo"):
        session.notify(name)
    # The benchmark smoke run: fails if a tether pool is over 2x slower than the
    # fastest peer measured in the same run (a ratio, not a time).
    session.notify("bench", posargs=["--quick"])
