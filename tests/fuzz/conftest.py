"""One `gd-serve` subprocess for the whole fuzz run (this package's tests), a healthy stream
beside it, and the run's figures at the end (tiers: tests/fuzz/harness.py)."""

import pytest

from tests.fuzz import harness
from tests.fuzz.corpus import record_seed
from tests.helpers.tiny_bundle import make_bundle


# The fuzz run's, and no longer: the package's tests run together (one xdist work unit,
# tests/conftest.py), and a server scoring the healthy stream for the rest of the suite would
# take a core's share from every test after them.
@pytest.fixture(scope="package")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    bundle = make_bundle(root / "tiny")
    spool = root / "spool"
    spool.mkdir()
    harness.leave_stale_spool_files(spool)  # its start must remove them: test_regressions.py
    server = harness.ServerProcess(harness.server_settings(bundle.root, spool), root / "server.log")
    healthy = harness.HealthyStream(server, root / "healthy.json")
    _RUN.update(server=server, healthy=healthy)
    yield server
    healthy.stop()
    harness.summary(server, healthy)
    server.stop()


@pytest.fixture(scope="session")
def db3_seed(tmp_path_factory) -> bytes:
    return record_seed(tmp_path_factory.mktemp("seed") / "seed.db3")


_RUN: dict = {}


def pytest_terminal_summary(terminalreporter):
    if not harness.STATS.cases:
        return
    figures = harness.summary(_RUN.get("server"), _RUN.get("healthy"))
    terminalreporter.section(f"fuzz figures ({harness.TIER} tier)")
    for key, value in figures.items():
        if key != "failure_list":
            terminalreporter.write_line(f"{key:22s} {value}")
    for failure in figures["failure_list"]:
        terminalreporter.write_line(f"FAILURE {failure}")


def pytest_sessionfinish(session, exitstatus):
    # The long tier records failures and goes on, so its tests pass: the run must not.
    if harness.LONG and harness.STATS.failures and exitstatus == 0:
        session.exitstatus = 1
