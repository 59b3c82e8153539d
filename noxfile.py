"""Every task of the tether monorepo: ``nox -s <session>``.

nox -s demo        the main job: a threaded workload, per-request connects vs pools
nox -s ci          everything CI runs: provision, lint, typecheck, tests, chaos, bench --quick
nox -s tests       each package installed alone (only its declared deps) and tested
nox -s lint        ruff
nox -s typecheck   mypy --strict
nox -s chaos       the chaos suite: real faults through toxiproxy and server restarts
nox -s bench       benchmarks against DBUtils, psycopg_pool, SQLAlchemy, peewee
nox -s provision   install PostgreSQL, MariaDB, libpq-dev (apt) and toxiproxy (go)
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
TOOLS = ROOT / ".tether" / "bin"  # tools built for this checkout (toxiproxy)
DRIVERS = "psycopg,pygresql,pymysql"
# Each package and the packages it depends on, bottom layer first.
PACKAGES = {
    "simple_pool": ["simple_pool"],
    "steady": ["simple_pool", "steady"],
    "persistent": ["simple_pool", "steady", "persistent"],
    "pooled": ["simple_pool", "steady", "pooled"],
    "frameworks": ["simple_pool", "steady", "persistent", "pooled", "frameworks"],
}
#: Extras beyond the drivers, per package.
EXTRAS = {"frameworks": "sqlalchemy,django,peewee"}
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.12.0"  # pinned: CI builds the same server every time
APT_PACKAGES = ["postgresql", "libpq-dev", "mariadb-server", "gcc", "valgrind"]


def _package_specs(names: list[str]) -> list[str]:
    """pip specs of local packages, each with the driver extras."""
    return [
        f"{ROOT / 'packages' / name}[{','.join(filter(None, [DRIVERS, EXTRAS.get(name)]))}]"
        for name in names
    ]


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
    if not shutil.which("valgrind"):
        missing.append("valgrind")  # the benchmarks' instructions phase (callgrind)
    return missing


def _go() -> str | None:
    return shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.path.exists(p)), None
    )


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
        session.log("provision: PostgreSQL, MariaDB, libpq-dev and gcc are installed")
    server = TOOLS / "toxiproxy-server"
    if server.exists():
        session.log(f"provision: toxiproxy server present at {server}")
        return
    go = _go()
    if go is None:
        session.error("toxiproxy needs Go >= 1.22 to build (go install); no `go` found")
    session.log(f"provision: go install {TOXIPROXY_MODULE}@{TOXIPROXY_VERSION} -> {server}")
    gobin = TOOLS / "gobuild"
    gobin.mkdir(parents=True, exist_ok=True)
    session.run(
        go, "install", f"{TOXIPROXY_MODULE}@{TOXIPROXY_VERSION}",
        external=True, env={"GOBIN": str(gobin), "CGO_ENABLED": "0"},
    )  # fmt: skip
    (gobin / "server").rename(server)


@nox.session(venv_backend="none")
def provision(session: nox.Session) -> None:
    """Install PostgreSQL, MariaDB, libpq-dev (apt) and the toxiproxy server (go install)."""
    provision_machine(session)


# -- quality ----------------------------------------------------------------------------------


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package's sources and the harness."""
    session.install(
        "mypy>=1.10", *_package_specs(list(PACKAGES)), f"{ROOT / 'harness'}[chaos,docker]"
    )
    session.run(
        "mypy",
        "packages/simple_pool/src/tether/simple_pool",
        "packages/steady/src/tether/steady",
        "packages/persistent/src/tether/persistent",
        "packages/pooled/src/tether/pooled",
        "packages/frameworks/src/tether/frameworks",
        "harness/src/tether/harness",
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build each distribution's wheel and sdist into dist/, one by one."""
    session.install("build>=1.2")
    for name in [*PACKAGES, "harness"]:
        path = ROOT / "packages" / name if name in PACKAGES else ROOT / name
        session.run("python", "-m", "build", "--outdir", str(ROOT / "dist"), str(path))


# -- tests -------------------------------------------------------------------------------------


TESTED = [*PACKAGES, "harness"]
TEST_SESSIONS = [f"tests(package='{name}')" for name in TESTED]


@nox.session
@nox.parametrize("package", TESTED)
def tests(session: nox.Session, package: str) -> None:
    """One package, installed with only its declared dependencies, against real servers."""
    if package == "harness":
        session.install(f"{ROOT / 'harness'}")
        path = ROOT / "harness" / "tests"
    else:
        # Non-editable installs: the tests import what a user's pip would install.
        session.install(*_package_specs(PACKAGES[package]), f"{ROOT / 'harness'}")
        path = ROOT / "packages" / package / "tests"
    session.run(
        "pytest", "-n", os.environ.get("TETHER_WORKERS", "auto"), "--import-mode=importlib",
        str(path), *session.posargs, env=_test_env(),
    )  # fmt: skip


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
    for name in ("lint", "typecheck", *TEST_SESSIONS, "chaos", "demo"):
        session.notify(name)
    # The benchmark smoke run: fails if a tether pool is over 2x slower than the
    # fastest peer measured in the same run (a ratio, not a time).
    session.notify("bench", posargs=["--quick"])
