import pytest

from tests.server.mqtt.broker import Broker


@pytest.fixture
def broker(tmp_path):
    """A fresh mosquitto on a free loopback port, stopped after the test (the MQTT listener's
    tests and the alerts' MQTT destinations share it)."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
