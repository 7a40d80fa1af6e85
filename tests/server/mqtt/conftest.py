import pytest

from tests.server.mqtt.broker import Broker


@pytest.fixture
def broker(tmp_path):
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
