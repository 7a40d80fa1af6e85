"""A real mosquitto broker on a free loopback port, and a real paho subscriber that records
what arrives."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

WAIT_S = 20  # how long to wait for something to arrive before a test fails
# paho's reconnect delay in the tests (paho takes float seconds; the settings' whole seconds
# are for people): a test waits this long for a reconnect after a broker restart, and for
# paho's thread to end when it sleeps between attempts (`loop_stop`).
RECONNECT_S = 0.05


def mosquitto_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto with persistence in `folder`, so that a restart keeps retained messages and
    the sessions of subscribers that asked to be remembered (clean_session=False)."""

    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) for a second, TLS listener on `tls_port`."""
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.process: subprocess.Popen | None = None
        self.config = folder / "mosquitto.conf"
        tls_listener = (
            f"listener {self.tls_port} 127.0.0.1\ncertfile {tls[0]}\nkeyfile {tls[1]}\n"
            if tls
            else ""
        )
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{tls_listener}"
            "allow_anonymous true\n"
            # Run as root, mosquitto would become the mosquitto user, who cannot write here.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n"
        )

    def start(self) -> None:
        binary = mosquitto_binary()
        assert binary, "mosquitto is not installed (apt-get install mosquitto; make setup does)"
        self.process = subprocess.Popen([binary, "-c", str(self.config)])
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                for port in (self.port, self.tls_port):
                    if port is not None:
                        socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "mosquitto.log").read_text(errors="replace")
                    raise RuntimeError(f"mosquitto did not start: {log[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to `topics` at QoS 1, recording every message."""

    def __init__(self, port: int, topics: list[str], client_id: str = "", clean: bool = True):
        self.messages: list[Received] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._notify()
        self.subscribed = False
        self.client.reconnect_delay_set(RECONNECT_S, RECONNECT_S)
        self.client.connect_async("127.0.0.1", port, 30)
        self.client.loop_start()
        self.wait(lambda: self.subscribed, "the subscription")

    def _notify(self) -> None:
        with self.changed:
            self.subscribed = True
            self.changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.messages.append(
                Received(message.topic, message.payload.decode(), bool(message.retain))
            )
            self.changed.notify_all()

    def wait(self, ready: Callable[[], Any], what: str) -> Any:
        with self.changed:
            if not self.changed.wait_for(ready, WAIT_S):
                raise AssertionError(f"timed out waiting for {what}; got {self.messages}")
            return ready()

    def on(self, topic: str) -> list[Received]:
        with self.changed:
            return [m for m in self.messages if m.topic == topic]

    def wait_on(self, topic: str, count: int = 1) -> list[Received]:
        """The messages on `topic`, once there are at least `count`."""
        return self.wait(lambda: len(self.on(topic)) >= count and self.on(topic), topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl; the certificate is its own
    CA."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key
