"""Fixtures shared across test directories: the tiny model bundle and a real server on loopback
(tests/helpers/live.py). Their imports stay inside the fixtures, so tests of the other parts
never load the server."""

import os
import sys
from importlib.abc import MetaPathFinder

import pytest

# the retraining fixtures (a tiny site, its cache, a starting bundle, that bundle fine-tuned):
# tests/helpers/retraining.py; headless Chromium and a page in it: tests/helpers/browser.py;
# `--timeline DIR`, when each test ran and its CPU seconds: tests/helpers/timeline.py
pytest_plugins = ["tests.helpers.retraining", "tests.helpers.browser", "tests.helpers.timeline"]

# Modules that share an expensive session fixture (one export, one gd-serve, one tiny site):
# under `make test` (pytest-xdist) they run on one worker, so it is built once, not once a worker.
# The modules that run the dynamo ONNX exporter are one group too: a process's first export
# costs about 6 CPU s more than the next (the exporter's imports and caches warming up), and
# on one worker only that worker pays it.
SHARED_FIXTURE_GROUPS = {
    "tests/export/": "exporting",  # `made`: one `gd-export onnx` run (tests/export/conftest.py)
    "tests/training/test_finetune.py": "exporting",  # the site, its cache, bundle, fine-tuning
    "tests/e2e/test_retraining.py": "exporting",  # (tests/helpers/retraining.py)
    "tests/e2e/test_preprocessing_parity.py": "exporting",  # gd-export of a non-square model
    "tests/fuzz/": "fuzz",  # one gd-serve subprocess and the run's figures
}

# The longest work units, longest first (wall seconds under `make test`, measured with
# `--timeline=DIR` and bench/suite_timeline.py; much of it waiting on real time: streams,
# servers starting), handed out first: packed longest-first, the workers finish together instead
# of one running a 20-second unit alone at the end (docs/testing.md, "The suite's time").
# Everything else keeps its collection order.
HEAVY_FIRST = (
    "exporting",
    "tests/e2e/test_live_accuracy.py",
    "tests/training/test_ddp.py",
    "fuzz",
    "tests/e2e/test_quickstart.py",
    "tests/server/events/test_faults.py",
    "tests/training/test_trainer.py",
    "tests/bench/test_streams.py",
    "tests/server/test_stream.py",
    "tests/bench/test_soak.py",
    "tests/e2e/test_clients_e2e.py",
    "tests/test_docker.py",
    "tests/training/test_recordings.py",
    "tests/server/dashboard/test_browser.py",
    "tests/training/test_cli.py",
    "tests/server/alerts/test_kill9.py",
    "tests/server/test_hostile_uploads.py",
    "tests/synth/test_cli.py",
)


def work_unit(nodeid: str) -> str:
    """What one worker runs as a whole: a test's module, or its group of modules."""
    module = nodeid.split("::", 1)[0]
    groups = SHARED_FIXTURE_GROUPS.items()
    return next((g for prefix, g in groups if module.startswith(prefix)), module)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (`make test`): one worker more than there are cores. A third of the workers'
    time goes to waiting on real time (streams at 30 frames a second, servers starting and
    stopping), which the spare worker fills: on 2 cores 130-136 s with 3 workers against
    147-165 s with 2 in the same hour (docs/testing.md, "The suite's time"). Not under
    `--fast`, which never waits: there a third worker only adds its collection (24 s, not 22).
    PYTEST_XDIST_AUTO_NUM_WORKERS, where set, still decides (xdist's own rule)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    cores = len(os.sched_getaffinity(0))
    return cores if config.getoption("fast") else cores + 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own choice of scheduler
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under -n (whose default distribution is per test) the work unit is a module, so that a
    module's fixtures (a server, a trained model) are built once, or a group of modules from
    SHARED_FIXTURE_GROUPS. (xdist's own `--dist loadgroup` marks do nothing on pytest 9.)"""
    if config.getvalue("dist") != "load":
        return None  # another --dist asked for explicitly
    from xdist.scheduler import LoadFileScheduling

    # xdist reorders the units by their number of tests unless told not to: ours are in the
    # order pytest_collection_modifyitems gives them (HEAVY_FIRST)
    config.option.loadscopereorder = False

    class ModuleGroups(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleGroups(config, log)


# Fixtures that start a real server, service or browser, or build a model in another process:
# a test using any of them is marked `integration` (`make test-fast` leaves it out).
INTEGRATION_FIXTURES = {
    "test_settings",  # the live server's settings: every LiveServer in tests/ is built on them
    "server",  # uvicorn on loopback (tests/helpers/live.py)
    "make_server",
    "postgres",  # a PostgreSQL server (tests/server/events/conftest.py)
    "broker",  # mosquitto (tests/server/conftest.py)
    "browser",  # headless Chromium (tests/helpers/browser.py)
    "tab",
    "fuzz_server",  # gd-serve in a subprocess (tests/fuzz/conftest.py)
    "made",  # one `gd-export onnx` run (tests/export/conftest.py)
    "site",  # the retraining fixtures: a tiny site, its cache, a bundle, its fine-tuning
    "cache",
    "bundle",
    "finetuned",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the edit-run loop (`make test-fast`): leave out the tests marked slow or "
        "integration, and the test modules that import torch (docs/testing.md)",
    )


TORCH_SKIP = "imports torch, which `--fast` leaves out"


class _NoTorch(MetaPathFinder):
    """Under --fast, importing torch skips the test module that asked for it: importing torch
    costs each xdist worker about 3 CPU seconds, and every worker imports every test module."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "torch":
            raise pytest.skip.Exception(TORCH_SKIP, allow_module_level=True)


def pytest_configure(config: pytest.Config) -> None:
    """One OpenMP/torch thread per worker when the workers already fill the cores: two workers
    each spinning two threads on two cores burn CPU waiting for each other (docs/testing.md,
    "The suite's time"). Set before torch is imported, and inherited by the CLIs the tests run."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers >= (os.cpu_count() or 1) and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["GD_TESTS_ONE_THREAD"] = "1"
    if config.getoption("fast"):
        given = config.option.markexpr
        fast = "not slow and not integration"
        config.option.markexpr = f"{fast} and ({given})" if given else fast
        sys.meta_path.insert(0, _NoTorch())


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker leaves without the interpreter's teardown, once its session is over and
    its results are with the controller (sent in `pytest_sessionfinish`, written through
    before that returns): unloading torch, dynamo and the server's modules cost each worker
    about 2 CPU s, at the end of the run, when nothing else is left to run beside it."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        # the PostgreSQL case of tests/server/events' `store_url` asks for `postgres` by name
        on_postgres = callspec is not None and callspec.params.get("store_url") == "postgresql"
        if uses & INTEGRATION_FIXTURES or on_postgres:
            item.add_marker(pytest.mark.integration)
    # the order in which the workers' scheduler hands the units out
    rank = {unit: i for i, unit in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))  # stable


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module skipped for importing torch under --fast is left out without a line of its own
    in the summary (the summary says once that they are left out)."""
    report = yield
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
    if reason.endswith(TORCH_SKIP):
        report.outcome = "passed"
        report.longrepr = None
    return report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if config.getoption("fast"):
        terminalreporter.write_line(
            "--fast: left out the tests marked slow or integration and the test modules that "
            "import torch; `make test` runs them all"
        )


@pytest.fixture(autouse=True)
def _numerics_on_every_core(request: pytest.FixtureRequest):
    """Tests marked `numerics` get every core back under that rule, so `make test` still
    compares floating-point results summed by several threads (`make test-threads`: by one)."""
    # not imported here: under --fast it is not there, and the suite's modules that use torch
    # import it when they are collected, before any test runs
    torch = sys.modules.get("torch")
    numerics = request.node.get_closest_marker("numerics")
    if torch is None or not os.environ.get("GD_TESTS_ONE_THREAD") or not numerics:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    from tests.helpers.tiny_bundle import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def test_settings(tiny_bundle, tmp_path_factory):
    """Small limits and timeouts so every path is quick to reach."""
    from server.settings import Settings
    from tests.helpers.live import TOKEN

    return Settings(
        model=tiny_bundle.root,
        tokens=(TOKEN,),
        data_dir=tmp_path_factory.mktemp("data"),  # the event store, one per session
        threads=1,
        max_streams=40,
        queue_frames=100_000,  # test clients send in bursts, not in real time
        idle_timeout_s=2.0,
        send_timeout_s=2.0,
        max_upload_bytes=8 << 20,
        max_decoded_bytes=64 << 20,
        max_upload_frames=2000,
        spool_dir=tmp_path_factory.mktemp("spool"),
    )


@pytest.fixture(scope="module")
def server(test_settings):
    from tests.helpers.live import LiveServer

    live = LiveServer(test_settings)
    yield live
    live.stop()


@pytest.fixture
def make_server():
    """Start servers with other settings; all are stopped after the test."""
    from tests.helpers.live import LiveServer

    started = []

    def start(settings, **kwargs):
        started.append(LiveServer(settings, **kwargs))
        return started[-1]

    yield start
    for live in started:
        live.stop()
