"""The event store's backends for tests: a SQLite file per test, and a real PostgreSQL server
(Debian's `postgresql` package) started once per session in a temporary folder, listening on
a Unix socket only, with its test database emptied for each test.

initdb refuses to run as root: as root the server runs as `nobody` (through `runuser`). Without
the PostgreSQL binaries the PostgreSQL cases are skipped, saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_USER = "nobody"  # who runs the server when the tests run as root
PG_PORT = 5433  # names the socket file only: no TCP listener, so no clash with anything
BACKENDS = ["sqlite", "postgresql"]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


class Postgres:
    """A PostgreSQL server of this test session."""

    def __init__(self, root: Path, pg_ctl: str) -> None:
        self.root, self.pg_ctl, self.data = root, pg_ctl, root / "data"
        self.created = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}&port={PG_PORT}"

    def empty_database(self) -> str:
        """The URL of the session's test database, emptied (a new schema is far quicker than
        a new database)."""
        import psycopg

        with psycopg.connect(host=str(self.root), port=PG_PORT, user="postgres",
                             dbname="postgres", autocommit=True) as conn:  # fmt: skip
            if not self.created:
                conn.execute("CREATE DATABASE gd_test")
                self.created = True
        with psycopg.connect(host=str(self.root), port=PG_PORT, user="postgres",
                             dbname="gd_test", autocommit=True) as conn:  # fmt: skip
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return self.url("gd_test")

    def stop(self) -> None:
        subprocess.run(
            _as_server_user([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )


@pytest.fixture(scope="session")
def postgres():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    # not under pytest's tmp folder: that is private to root, and the server runs as nobody
    root = Path(tempfile.mkdtemp(prefix="gd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
    server = Postgres(root, pg_ctl)
    try:
        subprocess.run(
            _as_server_user([initdb, "-D", str(server.data), "-U", "postgres", "--auth=trust",
                             "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-k {root} -p {PG_PORT} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(server.data), "-o", options, "-w",
                             "-l", str(root / "log"), "start"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr.decode()}{log}") from e
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """An empty event store's URL, on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return request.getfixturevalue("postgres").empty_database()


@pytest.fixture
def events_settings(test_settings, tmp_path):
    """The tests' server settings with an event store of its own (SQLite in tmp_path)."""
    import dataclasses

    return dataclasses.replace(test_settings, data_dir=tmp_path / "data")
