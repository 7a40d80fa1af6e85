"""Action events and per-camera state on an MQTT broker, for Home Assistant and scripts.

`MqttPublisher` is an event-bus listener (`server/eventbus.py`). It publishes, all with QoS 1:

    <prefix>/<camera>/events   one JSON message per action start and end (not retained)
    <prefix>/<camera>/state    retained JSON: online, current action, its probability, fps
    <prefix>/<camera>/action   retained: the current action's label, or "none"
    <prefix>/status            retained "online" on every connect; "offline" as the last will
                               and on a clean shutdown
    <discovery>/sensor/<node>/<sensor>/config   retained Home Assistant discovery (optional)

`<camera>` is the camera id where it is a safe topic level (letters, digits, `_`, `-`), else a
slug of it with a short hash (`topic_id`); payloads always carry the camera id itself.

paho's network thread (`loop_start`) connects, reconnects with exponential backoff and sends;
`publish` only queues, so the event loop never waits on the broker. While the broker is away
paho keeps QoS 1 messages in memory (at most `max_queued`; beyond it new ones are dropped and
counted) and sends them in order once it is back. docs/mqtt.md has topics, payloads, settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.events import ActionEnd, ActionStart, Event, Scores
from core.wire import Hello
from server.settings import Settings, SettingsError

if TYPE_CHECKING:  # imported when a publisher is made: a server without MQTT starts without paho
    import paho.mqtt.client as mqtt

log = logging.getLogger("gd.server")

QOS = 1  # at least once: consumers de-duplicate events by their `id`
NO_ACTION = "none"
_SAFE_LEVEL = re.compile(r"[A-Za-z0-9_-]+")


class MqttConfigError(Exception):
    """An MQTT setting is malformed, or its password file cannot be read."""


@dataclass(frozen=True)
class MqttConfig:
    """Where and how to publish; the server's settings fill one (docs/mqtt.md)."""

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None  # TLS: the broker's CA; None: the system's CAs
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None  # the password, on its first line
    prefix: str = "gd"
    client_id: str = ""  # "": gd-detect-<hostname>-<pid>, unique per server process
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 30
    max_queued: int = 10_000  # messages held while the broker is away
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60

    def __post_init__(self) -> None:
        if not self.host:
            raise MqttConfigError("MQTT host must not be empty")
        if not 0 < self.port <= 65535:
            raise MqttConfigError(f"MQTT port must be 1-65535, got {self.port}")
        for name in ("prefix", "discovery_prefix"):
            value = getattr(self, name)
            if (problem := topic_problem(value)) is not None:
                raise MqttConfigError(f"MQTT {name} {problem}, got {value!r}")
        if self.password is not None and self.password_file is not None:
            raise MqttConfigError("give the MQTT password or its file, not both")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise MqttConfigError("MQTT reconnect delays must satisfy 0 < min <= max")
        if self.keepalive_s < 5 or self.max_queued < 1:
            raise MqttConfigError("MQTT keepalive must be >= 5 s and max_queued >= 1")

    def read_password(self) -> str | None:
        """The password, from the setting or the first line of its file."""
        if self.password_file is None:
            return self.password
        try:
            lines = Path(self.password_file).read_text().splitlines()
        except OSError as e:
            raise MqttConfigError(
                f"cannot read MQTT password file {self.password_file}: {e}"
            ) from None
        return lines[0] if lines else ""


def topic_problem(value: str) -> str | None:
    """What makes `value` no topic to publish under (as the words after its name), or None."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        return "must be non-empty topic levels"
    if any(c in value for c in "+#\0"):
        return "must not contain + # or NUL"
    return None


def topic_id(camera_id: str) -> str:
    """The camera's topic level: its id when that is safe in topics and Home Assistant object
    ids, else a slug plus a hash of the id, so that two ids never share a level."""
    if _SAFE_LEVEL.fullmatch(camera_id):
        return camera_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", camera_id).strip("_")[:40]
    return f"{slug}-{hashlib.sha256(camera_id.encode()).hexdigest()[:8]}"


@dataclass
class _Action:
    """The action a camera is in, from its start message."""

    id: str
    label: str
    start: datetime


@dataclass
class _Camera:
    level: str  # topic_id(camera_id)
    fps: float
    action: _Action | None = None
    probability: float | None = None
    last_frame: tuple[int, int] | None = None  # (frame_index, timestamp_us) of the last scores


class MqttPublisher:
    """Publishes the event bus's streams to an MQTT broker; `start`, subscribe, `stop`."""

    def __init__(
        self, config: MqttConfig, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.config = config
        self.now = now
        self.dropped = 0  # messages refused because paho's queue was full
        self.cameras: dict[str, _Camera] = {}
        self.status_topic = f"{config.prefix}/status"
        client_id = config.client_id or f"gd-detect-{socket.gethostname()}-{os.getpid()}"
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        self.client.enable_logger(logging.getLogger("gd.mqtt"))
        self.client.max_queued_messages_set(config.max_queued)
        self.client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        if config.username is not None:
            self.client.username_pw_set(config.username, config.read_password())
        if config.tls:
            self.client.tls_set(ca_certs=None if config.ca_file is None else str(config.ca_file))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    # --- life -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in paho's thread; a broker that is down now is retried with backoff."""
        c = self.config
        self.client.connect_async(c.host, c.port, c.keepalive_s)
        self.client.loop_start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Say "offline" (a clean disconnect sends no will), then stop paho's thread.
        Blocks up to `timeout_s` for the broker's acknowledgement."""
        import paho.mqtt.client as mqtt

        info = self.client.publish(self.status_topic, "offline", qos=QOS, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            # The connection may go meanwhile: nothing more to do on the way out.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    async def stop(self, timeout_s: float = 2.0) -> None:
        await asyncio.to_thread(self.close, timeout_s)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, *_: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "MQTT broker %s:%d refused us: %s", self.config.host, self.config.port, reason
            )
            return
        log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        # Sent before the messages queued while away: those follow in their order.
        client.publish(self.status_topic, "online", qos=QOS, retain=True)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, *_: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", reason)

    # --- the bus ---------------------------------------------------------------------

    async def connected(self, camera_id: str, hello: Hello, model: dict[str, str]) -> None:
        camera = self.cameras[camera_id] = _Camera(topic_id(camera_id), float(hello.fps))
        if self.config.discovery:
            for topic, config in discovery_configs(self.config, camera_id, camera.level, model):
                self._publish(topic, config, retain=True)
        self._publish_action(camera)
        self._publish_state(camera_id, camera, online=True)

    async def event(self, camera_id: str, event: Event, model: dict[str, str]) -> None:
        camera = self.cameras.get(camera_id)
        if camera is None:  # `ready` goes out before `connected`
            return
        if isinstance(event, Scores):
            self._scores(camera, event)
            self._publish_state(camera_id, camera, online=True)
        elif isinstance(event, ActionStart):
            camera.action = _Action(str(uuid.uuid4()), event.label, self.now())
            camera.probability = event.confidence
            self._publish_event(camera_id, camera, event, model)
            self._publish_action(camera)
            self._publish_state(camera_id, camera, online=True)
        elif isinstance(event, ActionEnd):
            self._publish_event(camera_id, camera, event, model)
            camera.action = camera.probability = None
            self._publish_action(camera)
            self._publish_state(camera_id, camera, online=True)

    async def disconnected(self, camera_id: str, frames: int, dropped: int) -> None:
        camera = self.cameras.pop(camera_id, None)
        if camera is None:
            return
        camera.action = camera.probability = None
        self._publish_action(camera)
        self._publish_state(camera_id, camera, online=False)

    # --- messages ----------------------------------------------------------------------

    def _scores(self, camera: _Camera, scores: Scores) -> None:
        """The current action's newest probability, and the sender's frame rate between
        this clip's last frame and the previous clip's (drops by the server included)."""
        if camera.action is not None:
            for s in scores.top:
                if s.label == camera.action.label:
                    camera.probability = s.score
        frame = (scores.frame_index, scores.timestamp_us)
        if camera.last_frame is not None:
            frames, us = frame[0] - camera.last_frame[0], frame[1] - camera.last_frame[1]
            if frames > 0 and us > 0:
                camera.fps = frames / (us / 1e6)
        camera.last_frame = frame

    def _publish_event(
        self,
        camera_id: str,
        camera: _Camera,
        event: ActionStart | ActionEnd,
        model: dict[str, str],
    ) -> None:
        now = self.now()
        end = event if isinstance(event, ActionEnd) else None
        action = camera.action  # set by the start; the end's final label may differ
        if action is None:  # an end whose start went before we listened
            duration = timedelta(seconds=end.end_s - end.start_s) if end else timedelta()
            action = _Action(str(uuid.uuid4()), event.label, now - duration)
        payload = {
            "id": action.id,
            "state": "start" if end is None else "end",
            "camera_id": camera_id,
            "label": event.label,
            "class_id": event.class_id,
            "confidence": event.confidence,
            "start": _iso(action.start),
            "end": None if end is None else _iso(now),
            "start_s": event.start_s,
            "end_s": None if end is None else end.end_s,
            "model_name": model.get("name"),
            "model_version": model.get("version"),
        }
        self._publish(f"{self.config.prefix}/{camera.level}/events", payload)

    def _publish_action(self, camera: _Camera) -> None:
        label = NO_ACTION if camera.action is None else camera.action.label
        self._publish(f"{self.config.prefix}/{camera.level}/action", label, retain=True)

    def _publish_state(self, camera_id: str, camera: _Camera, online: bool) -> None:
        payload = {
            "camera_id": camera_id,
            "online": online,
            "action": NO_ACTION if camera.action is None else camera.action.label,
            "probability": camera.probability,
            "fps": round(camera.fps, 2),
            "time": _iso(self.now()),
        }
        self._publish(f"{self.config.prefix}/{camera.level}/state", payload, retain=True)

    def _publish(self, topic: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        import paho.mqtt.client as mqtt

        body = payload if isinstance(payload, str) else json.dumps(payload)
        info = self.client.publish(topic, body, qos=QOS, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("MQTT queue full (broker away?): %d messages dropped", self.dropped)


def discovery_configs(
    config: MqttConfig, camera_id: str, level: str, model: dict[str, str]
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery: the camera as a device with three sensors (action,
    probability, fps) read from its state topic, available while both the server and the
    camera are online."""
    state = f"{config.prefix}/{level}/state"
    node = f"{topic_id(config.prefix)}_{level}"
    common = {
        "state_topic": state,
        "qos": QOS,
        "availability": [
            {"topic": f"{config.prefix}/status"},
            {
                "topic": state,
                "value_template": "{{ 'online' if value_json.online else 'offline' }}",
            },
        ],
        "availability_mode": "all",
        "device": {
            "identifiers": [node],
            "name": f"Camera {camera_id}",
            "manufacturer": "gd-detect",
            "model": model.get("name", ""),
            "sw_version": model.get("version", ""),
        },
    }
    sensors = {
        "action": {
            "name": "Action",
            "value_template": "{{ value_json.action }}",
            "json_attributes_topic": state,
            "icon": "mdi:human",
        },
        "probability": {
            "name": "Action probability",
            "value_template": "{{ ((value_json.probability or 0) * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
        },
        "fps": {
            "name": "Frame rate",
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
        },
    }
    return [
        (
            f"{config.discovery_prefix}/sensor/{node}/{name}/config",
            {**sensor, **common, "unique_id": f"{node}_{name}"},
        )
        for name, sensor in sensors.items()
    ]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def publisher_from_settings(settings: Settings) -> MqttPublisher | None:
    """The server's MQTT publisher, or None without `mqtt_host`; bad values: SettingsError."""
    s = settings
    if not s.mqtt_host:
        return None
    try:
        return MqttPublisher(
            MqttConfig(
                s.mqtt_host, s.mqtt_port, s.mqtt_tls, s.mqtt_ca_file, s.mqtt_username,
                s.mqtt_password, s.mqtt_password_file, s.mqtt_prefix, s.mqtt_client_id,
                s.mqtt_discovery,
            )
        )  # fmt: skip
    except MqttConfigError as e:
        raise SettingsError(f"mqtt: {e}") from None
