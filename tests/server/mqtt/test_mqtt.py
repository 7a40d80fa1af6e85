"""server/events/mqtt.py against a real mosquitto (tests/server/mqtt/broker.py) and real paho
subscribers: events, retained state, discovery, the last will, the queue while the broker is
away, and a stream through a real uvicorn server."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.events import ActionEnd, ActionStart, Score, Scores
from core.wire import Hello
from server.events.mqtt import MqttConfig, MqttConfigError, MqttPublisher, topic_id
from tests.helpers.streams import TS, stream
from tests.server.mqtt.broker import (
    RECONNECT_S,
    WAIT_S,
    Broker,
    Subscriber,
    free_port,
    self_signed_certificate,
)

ROOT = Path(__file__).parents[3]
MODEL = {"name": "tiny", "version": "7"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def config(port: int, **kw) -> MqttConfig:
    return MqttConfig("127.0.0.1", port, client_id=f"gd-test-{port}", **kw)


def scores(frame_index: int, timestamp_us: int, top: tuple[Score, ...] = ()) -> Scores:
    return Scores(0, 0, 0, 0.0, 0.0, 0, 0, 0.5, top, frame_index, timestamp_us)


START = ActionStart("large", 2, 0.8, 8, 96, 3.2, 4_200_000)
END = ActionEnd("small", 1, 96, 131, 3.2, 4.4, 0.6, 4_200_000, 5_400_000, 8, 10)
SCORES_1 = scores(107, 4_566_667, (Score("large", 2, 0.85), Score("small", 1, 0.1)))
SCORES_2 = scores(119, 4_966_667, (Score("small", 1, 0.3), Score("large", 2, 0.9)))


def run_bus(publisher: MqttPublisher, camera: str, clock: Clock) -> None:
    """A camera connects, an action starts, lasts 2 s on the clock, ends; the camera goes."""

    async def run() -> None:
        await publisher.connected(camera, Hello(camera, 64, 48, 15.0), MODEL)
        await publisher.event(camera, START, MODEL)
        await publisher.event(camera, SCORES_1, MODEL)
        await publisher.event(camera, SCORES_2, MODEL)
        clock.t += timedelta(seconds=2)
        await publisher.event(camera, END, MODEL)
        await publisher.disconnected(camera, 200, 0)

    asyncio.run(run())


def wait_connected(publisher: MqttPublisher, connected: bool = True) -> None:
    deadline = time.monotonic() + WAIT_S
    while publisher.client.is_connected() != connected:
        assert time.monotonic() < deadline, f"publisher never {'dis' * (not connected)}connected"
        time.sleep(0.02)


def test_events_state_action_and_discovery(broker):
    camera = "ward 3/bed 1"  # not a safe topic level: published under its slug and hash
    level = topic_id(camera)
    live = Subscriber(broker.port, ["gd/#"])
    clock = Clock()
    publisher = MqttPublisher(config(broker.port), now=clock)
    publisher.start()
    run_bus(publisher, camera, clock)

    start, end = (m.json() for m in live.wait_on(f"gd/{level}/events", 2))
    assert start["id"] == end["id"]
    common = {"camera_id": camera, "model_name": "tiny", "model_version": "7"}
    assert start == {
        **common, "id": start["id"], "state": "start", "label": "large", "class_id": 2,
        "confidence": 0.8, "start": T0.isoformat(), "end": None, "start_s": 3.2, "end_s": None,
    }  # fmt: skip
    assert end == {
        **common, "id": start["id"], "state": "end", "label": "small", "class_id": 1,
        "confidence": 0.6, "start": T0.isoformat(), "end": (T0 + timedelta(seconds=2)).isoformat(),
        "start_s": 3.2, "end_s": 4.4,
    }  # fmt: skip
    actions = live.wait_on(f"gd/{level}/action", 4)  # connected, start, end, gone
    assert [m.payload for m in actions] == ["none", "large", "none", "none"]
    states = [m.json() for m in live.wait_on(f"gd/{level}/state", 6)]
    # connected, start, two scores (the newest probability of the open action), end, gone
    assert [(s["online"], s["action"], s["probability"]) for s in states] == [
        (True, "none", None),
        (True, "large", 0.8),
        (True, "large", 0.85),
        (True, "large", 0.9),
        (True, "none", None),
        (False, "none", None),
    ]
    # the hello's rate until two clips give the sender's own: frames over its timestamps
    fps = (119 - 107) / ((4_966_667 - 4_566_667) / 1e6)
    assert [s["fps"] for s in states] == [15.0, 15.0, 15.0] + [round(fps, 2)] * 3
    assert states[-1]["time"] == (T0 + timedelta(seconds=2)).isoformat()

    # a subscriber that comes later (Home Assistant after a restart) gets the retained topics
    later = Subscriber(broker.port, ["gd/#", "homeassistant/#"])
    assert later.wait_on("gd/status")[-1].payload == "online"
    assert later.wait_on(f"gd/{level}/action")[-1].payload == "none"
    assert later.wait_on(f"gd/{level}/state")[-1].json() == states[-1]
    discovery = later.wait(
        lambda: (
            (d := [m for m in later.messages if m.topic.startswith("homeassistant/")])
            and len(d) >= 3
            and d
        ),
        "three discovery configs",
    )
    configs = {m.topic: m.json() for m in discovery}
    node = f"gd_{level}"
    assert sorted(configs) == [
        f"homeassistant/sensor/{node}/{name}/config" for name in ("action", "fps", "probability")
    ]
    assert all(m.retain for m in later.messages)
    for name, c in ((t.split("/")[-2], c) for t, c in configs.items()):
        assert c["state_topic"] == f"gd/{level}/state"
        assert c["unique_id"] == f"{node}_{name}"
        assert c["availability"][0] == {"topic": "gd/status"}
        assert c["device"]["identifiers"] == [node]
    assert publisher.dropped == 0

    publisher.close()  # a clean shutdown says offline itself (no will is sent then)
    assert [m.payload for m in live.wait_on("gd/status", 2)] == ["online", "offline"]
    live.close()
    later.close()


@pytest.mark.slow  # a Python process that imports the publisher, killed (docs/testing.md)
def test_last_will_when_the_publisher_dies(broker):
    live = Subscriber(broker.port, ["site/gd/status"])
    script = (
        "import sys, time\n"
        "from server.events.mqtt import MqttConfig, MqttPublisher\n"
        f"p = MqttPublisher(MqttConfig('127.0.0.1', {broker.port}, prefix='site/gd'))\n"
        "p.start()\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        live.wait_on("site/gd/status")
        os.kill(process.pid, signal.SIGKILL)  # no clean disconnect: only the broker can tell
        process.wait(10)
        statuses = live.wait_on("site/gd/status", 2)
        assert [m.payload for m in statuses] == ["online", "offline"]
    finally:
        if process.poll() is None:
            process.kill()
        live.close()


@pytest.mark.slow  # over a second (docs/testing.md, "The suite's time")
def test_messages_published_while_the_broker_is_down_arrive_after_it_returns(broker):
    # A persistent subscriber session: the broker keeps it (and queues for it) across restart.
    live = Subscriber(broker.port, ["gd/+/events", "gd/status"], "gd-test-sub", clean=False)
    clock = Clock()
    publisher = MqttPublisher(
        config(
            broker.port, reconnect_min_s=RECONNECT_S, reconnect_max_s=RECONNECT_S, discovery=False
        ),
        now=clock,
    )
    publisher.start()
    wait_connected(publisher)
    broker.stop()
    wait_connected(publisher, False)
    run_bus(publisher, "cam-1", clock)  # queued in paho's memory
    assert publisher.dropped == 0
    broker.start()
    start, end = (m.json() for m in live.wait_on("gd/cam-1/events", 2))
    assert (start["state"], start["label"], end["state"], end["label"]) == (
        "start", "large", "end", "small"
    )  # fmt: skip
    publisher.close()
    live.close()


def test_a_full_queue_drops_new_messages_and_counts_them(tmp_path):
    # No broker listens: every QoS 1 message waits in paho's queue, which holds two. (A quick
    # reconnect: `close` waits for paho's thread, which sleeps out its reconnect delay.)
    publisher = MqttPublisher(
        config(free_port(), max_queued=2, discovery=False, reconnect_min_s=RECONNECT_S)
    )
    publisher.start()

    async def run() -> None:
        await publisher.connected("cam", Hello("cam", 64, 48, 30.0), MODEL)  # action, state
        await publisher.event("cam", START, MODEL)  # event, action, state: no room

    asyncio.run(run())
    assert publisher.dropped == 3
    publisher.close()


def test_a_stream_through_a_real_server_reaches_the_broker(broker, make_server, test_settings):
    live_server = make_server(test_settings)
    live = Subscriber(broker.port, ["gd/#"])
    publisher = MqttPublisher(config(broker.port))
    publisher.start()
    live_server.service.bus.subscribe(publisher)
    try:
        result = stream(live_server.ws_url)
        assert result.close_code == 1000, result.close_reason
        actions = result.of("action")
        assert len(result.ends) >= 1  # the recording has two actions; the test needs one
        published = [m.json() for m in live.wait_on("gd/cam-test/events", len(actions))]
        assert [(p["state"], p["label"], p["class_id"], p["confidence"]) for p in published] == [
            (a["state"], a["label"], a["class_id"], a["confidence"]) for a in actions
        ]
        state = live.wait(
            lambda: [m.json() for m in live.on("gd/cam-test/state") if not m.json()["online"]],
            "the camera going offline",
        )[-1]
        last, before = result.of("scores")[-1], result.of("scores")[-2]
        fps = (last["frame_index"] - before["frame_index"]) / (
            (TS[last["frame_index"]] - TS[before["frame_index"]]) / 1e6
        )
        assert (state["action"], state["fps"]) == ("none", round(fps, 2))
        assert live.on("gd/cam-test/action")[-1].payload == "none"
    finally:
        publisher.close()
        live.close()


def test_tls(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    broker = Broker(tmp_path, tls=(cert, key))
    broker.start()
    try:
        live = Subscriber(broker.port, ["gd/status"])  # on the plain listener
        publisher = MqttPublisher(config(broker.tls_port, tls=True, ca_file=cert))
        publisher.start()
        assert live.wait_on("gd/status")[-1].payload == "online"
        publisher.close()
        live.close()
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"prefix": "gd/#"}, "must not contain + #"),
        ({"prefix": "/gd"}, "non-empty topic levels"),
        ({"port": 0}, "port must be 1-65535"),
        ({"password": "x", "password_file": Path("p")}, "not both"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "0 < min <= max"),
    ],
)
def test_bad_config_is_refused_with_a_clear_error(kw, error):
    with pytest.raises(MqttConfigError, match=re.escape(error)):
        MqttConfig("broker", **{"port": 1883, **kw})


def test_password_file(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    assert MqttConfig("b", password_file=tmp_path / "pw").read_password() == "s3cret"
    with pytest.raises(MqttConfigError, match="cannot read MQTT password file"):
        MqttConfig("b", password_file=tmp_path / "missing").read_password()
    assert "s3cret" not in repr(MqttConfig("b", password="s3cret"))


def test_topic_ids_are_safe_and_distinct():
    assert topic_id("cam-1_A") == "cam-1_A"
    unsafe = ["a/b", "a_b", "a+b", "a#b", "a b", "ä"]
    ids = [topic_id(c) for c in unsafe]
    assert len(set(ids)) == len(ids)
    assert all(i.replace("_", "").replace("-", "").isalnum() and i.isascii() for i in ids)
