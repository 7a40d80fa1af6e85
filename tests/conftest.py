"""Fixtures shared across test directories: the tiny model bundle and a real server on loopback
(tests/helpers/live.py). Their imports stay inside the fixtures, so tests of the other parts
never load the server."""

import pytest

# the retraining fixtures (a tiny site, its cache, a starting bundle): tests/helpers/retraining.py
pytest_plugins = ["tests.helpers.retraining"]


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
