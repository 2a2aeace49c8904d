"""A throwaway PostgreSQL server for the tests, and the fixtures that give a test a database.

`Cluster` makes a cluster in a new temporary folder with Debian's binaries
(/usr/lib/postgresql/<version>/bin, from `apt-get install postgresql`), starts it listening only
on a unix socket in that folder, and removes it all when stopped. initdb refuses to run as root,
so as root the server runs as the `postgres` user (which owns the folder).

Use the fixtures from a test module with::

    from tests.pg import pg_cluster, pg_url  # noqa: F401

`pg_cluster` starts one server for the whole test run (on first use); `pg_url` is a fresh,
empty database on it for each test. Without the binaries the tests that use them are skipped,
unless the environment variable CI is set: then they fail, so CI never passes without them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

#: Where Debian's `postgresql` package puts its server binaries (one folder per major version).
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
#: The user that runs the server when the tests run as root.
SERVER_USER = "postgres"
#: The superuser the cluster is made with (trusted on its socket: no password).
SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (None: not installed)."""
    found = [p for p in DEBIAN_BINARIES.glob("*/bin") if (p / "initdb").exists()]
    if not found:
        return None
    return max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])


class ClusterError(Exception):
    """A PostgreSQL tool failed (its output says why)."""


class Cluster:
    """One PostgreSQL server in its own temporary folder, on a unix socket there only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="comfycord-pg-"))
        self.data = self.root / "data"
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bin_dir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ClusterError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
            "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(ClusterError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A URL of a database on this server (through its socket)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def started_cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and removed on exit; skips (fails under CI) without binaries."""
    bin_dir = binaries()
    if bin_dir is None:
        reason = "PostgreSQL is not installed: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (with CI set these tests always run)")
        pytest.skip(reason)
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


_RUNNING = pytest.StashKey[Cluster]()


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Cluster:
    """One PostgreSQL server for the whole test run, started when a test first needs it.

    Kept in the run's stash, so that modules importing this fixture share one server; stopped
    when the run ends.
    """
    if (running := request.config.stash.get(_RUNNING, None)) is not None:
        return running
    stack = contextlib.ExitStack()
    cluster = stack.enter_context(started_cluster())
    request.session.addfinalizer(stack.close)
    request.config.stash[_RUNNING] = cluster
    return cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh, empty database for this test."""
    return pg_cluster.new_database()


#: The databases a store's tests run on.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives: a SQLite file, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "db.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url
