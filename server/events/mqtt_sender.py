"""One MQTT alert destination's connection: publish an alert, wait for the broker to take it.

The deliverer (server/events/delivery.py) owns one `MqttSender` per `type: mqtt` destination
and calls `send` in a worker thread, never on the event loop: it blocks until the broker
acknowledged the message (PUBACK at QoS 1, PUBCOMP at QoS 2) or the destination's `timeout_s`
is spent. The connection is made by the first send and kept (paho's network thread answers the
broker's keepalive); a send that fails drops it, and the next connects afresh. paho's own
reconnecting is off: the deliverer's backoff paces the attempts, and a fresh client holds no
message of a failed attempt that paho would send again by itself (each attempt is one PUBLISH).
Errors name the broker and what went wrong, never the password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from server.events.mqtt import topic_id
from server.events.rules import MqttDestination

if TYPE_CHECKING:  # imported by the first send: a server without MQTT starts without paho
    import paho.mqtt.client as mqtt

KEEPALIVE_S = 30


class MqttSendError(Exception):
    """One attempt failed; the message says why, as the delivery log shows it."""


class MqttSender:
    """Publishes one destination's alerts; `send` (blocking) for each, `close` at the end."""

    def __init__(self, name: str, destination: MqttDestination) -> None:
        self.destination = destination
        self.broker = f"{destination.host}:{destination.broker_port}"
        # unique per server process and destination: a broker drops the older of two
        # connections with one client id
        self.client_id = f"gd-alerts-{socket.gethostname()}-{os.getpid()}-{topic_id(name)}"
        self._sending = threading.Lock()  # one send at a time
        self._changed = threading.Condition()  # paho's callbacks tell the sender here
        self._client: mqtt.Client | None = None
        self._state = "closed"  # "connecting", "up", "refused", "lost" or "closed"
        self._why = ""
        self._acked: set[int] = set()  # message ids the broker acknowledged

    def send(self, topic: str, payload: bytes) -> None:
        """Publish `payload` on `topic` and wait for the broker's acknowledgement; raises
        MqttSendError (and drops the connection) when it did not come within `timeout_s`."""
        deadline = time.monotonic() + self.destination.timeout_s
        with self._sending:
            try:
                client = self._connected(deadline)
                self._publish(client, topic, payload, deadline)
            except MqttSendError:
                self.close()
                raise

    def close(self) -> None:
        """Disconnect (a send waiting meanwhile fails at once) and stop paho's thread."""
        with self._changed:
            client, self._client = self._client, None
            self._state, self._why = "closed", "the sender closed"
            self._changed.notify_all()
        if client is not None:
            client.disconnect()
            # paho's thread ends by itself after a disconnect, forgetting itself as it goes:
            # loop_stop may find it between its check and its join (AttributeError)
            with contextlib.suppress(AttributeError):
                client.loop_stop()

    def _connected(self, deadline: float) -> mqtt.Client:
        """The kept connection if it is up, else a new one (its CONNACK awaited)."""
        with self._changed:
            if self._client is not None and self._state == "up":
                return self._client
        self.close()
        import paho.mqtt.client as mqtt

        d = self.destination
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.enable_logger(logging.getLogger("gd.mqtt"))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if d.username is not None:
            client.username_pw_set(d.username, d.password)
        with self._changed:
            self._client, self._state, self._why = client, "connecting", ""
            self._acked.clear()
        try:
            if d.tls:
                client.tls_set(ca_certs=None if d.ca_file is None else str(d.ca_file))
            client.connect_timeout = _left(deadline)
            client.connect(d.host, d.broker_port, KEEPALIVE_S)
        except (OSError, ValueError) as e:  # refused, unreachable, timed out, TLS, bad CA
            why = f"{type(e).__name__}: {e}"
            raise MqttSendError(f"cannot connect to {self.broker}: {why}") from None
        client.loop_start()
        with self._changed:
            self._changed.wait_for(lambda: self._state != "connecting", _left(deadline))
            if self._state == "up":
                return client
            if self._state == "connecting":
                raise MqttSendError(
                    f"{self.broker} did not accept the connection within {d.timeout_s:g} s"
                )
            raise MqttSendError(f"{self.broker} {self._said()}")

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes, deadline: float) -> None:
        import paho.mqtt.client as mqtt

        info = client.publish(topic, payload, qos=self.destination.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttSendError(f"{self.broker}: publish failed: {mqtt.error_string(info.rc)}")
        with self._changed:
            self._changed.wait_for(
                lambda: info.mid in self._acked or self._state != "up", _left(deadline)
            )
            if info.mid in self._acked:
                self._acked.discard(info.mid)
                return
            if self._state == "up":
                raise MqttSendError(
                    f"{self.broker} did not acknowledge within {self.destination.timeout_s:g} s"
                )
            raise MqttSendError(f"{self.broker} {self._said()} before acknowledging")

    def _said(self) -> str:
        """How the connection ended, in words (under `_changed`)."""
        if self._state == "refused":
            return f"refused the connection: {self._why}"
        if self._state == "closed":
            return "closed: the server is stopping"
        return f"closed the connection ({self._why})"

    # paho's callbacks, in its network thread; a replaced client's are ignored

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, *_: Any
    ) -> None:
        with self._changed:
            if client is self._client:
                self._state = "refused" if reason.is_failure else "up"
                self._why = str(reason)
                self._changed.notify_all()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, *_: Any
    ) -> None:
        with self._changed:
            if client is self._client and self._state != "refused":
                self._state, self._why = "lost", str(reason)
                self._changed.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *_: Any) -> None:
        with self._changed:
            if client is self._client:
                self._acked.add(mid)
                self._changed.notify_all()


def _left(deadline: float) -> float:
    """Seconds until `deadline`, never quite zero (paho and wait_for take 0 as no wait)."""
    return max(deadline - time.monotonic(), 0.001)
