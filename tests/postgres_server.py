"""A real PostgreSQL server for the tests of the record (tests/records) and of the inspector's recording
(tests/ros/inspector): fixtures ``postgres`` and ``postgres_db``, imported by those folders' conftest.py.

A throw-away cluster (initdb) in a temporary folder,
started and stopped with pg_ctl on a free local port, trust authentication on 127.0.0.1 only.

Debian's server refuses to run as root: as root the cluster belongs to the ``postgres`` system user (the
package creates it) or, without one, to a ``m3adpg`` user created here. Without the PostgreSQL binaries
(``apt-get install postgresql``, which .ci/run does) the PostgreSQL tests are skipped with that reason."""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _binaries():
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates += [str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])]
    for folder in candidates:
        if all(Path(folder, tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _server_user():
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "m3adpg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "m3adpg"], check=True)
    return "m3adpg"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A running cluster: ``url`` to connect, ``stop()`` / ``start()`` to take it down and bring it back."""

    def __init__(self, binaries: Path, user, root: Path) -> None:
        self.binaries, self.user, self.root = binaries, user, root
        self.data, self.port = root / "data", _free_port()
        self.url = f"postgresql://mentor3ad@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binaries / tool), *args], user=self.user, capture_output=True, text=True,
                              check=check, timeout=120, cwd=str(self.root))

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "mentor3ad", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c full_page_writes=off -c max_connections=30")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)


@pytest.fixture(scope="session")
def postgres():
    binaries = _binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql; .ci/run installs it)")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed (requirements/runtime.txt pins it)")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="m3ad-pg-"))
    if user is not None:
        shutil.chown(root, user)
    server = PostgresServer(binaries, user, root)
    try:
        server.init()
        server.start()
    except subprocess.CalledProcessError as err:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL ({err.cmd[0]}): {err.stderr}{log}")
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres):
    """A fresh, empty database on the server for one test; its URL."""
    import psycopg

    name = f"t{os.getpid()}_{_free_port()}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
