"""MQTT alert destinations against a real mosquitto (tests/server/mqtt/broker.py) through the
real event store's outbox (SQLite): an alerting event reaches a real paho subscriber once, with
the webhook's body and its delivery id; a broker that is away at first gets the alert once it
is up, the delivery log showing the failed attempts; one that stays away makes it dead; one
that stalls (SIGSTOP) gets no delivery until it acknowledges. The deliverer's clock and sleep
are fake (tests/helpers/webhooks.py): backoffs take no time, only the stalled broker's two
timeouts (STALL_TIMEOUT_S each) do."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from server.events.delivery import Deliverer, message_id
from server.events.mqtt import topic_id
from server.events.rules import AlertRules
from server.events.service import EventService
from server.events.store import EventStore, database_url
from server.events.types import Delivery, EventRecord
from tests.helpers.webhooks import POLL_S, T0, Clock
from tests.server.mqtt.broker import WAIT_S, Broker, Subscriber, self_signed_certificate

CAMERA = "ward 3/bed 1"  # not a safe topic level: published under topic_id's slug and hash
FENCE = "gd/alerts/fence"  # published after the deliverer is done: what came before it is all
STALL_TIMEOUT_S = 0.5  # ample for a broker on loopback that answers; waited twice when it stalls


def rules_for(tmp_path: Path, port: int, **fields: object) -> AlertRules:
    """A rule that alerts falls above 0.6 to one MQTT destination on `port`."""
    options = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "destinations:\n"
        "  ward-broker:\n"
        "    type: mqtt\n"
        "    host: 127.0.0.1\n"
        f"    port: {port}\n"
        f"{options}"
        "rules:\n"
        "  - name: falls\n"
        "    labels: [fall]\n"
        "    min_confidence: 0.6\n"
        "    destinations: [ward-broker]\n"
    )
    return AlertRules.load(path)


def fall(store: EventStore, event_id: str, start: datetime) -> Delivery:
    """A fall that alerts the broker; the outbox's row for it."""
    store.add_event(EventRecord(event_id, CAMERA, "fall", 1, 0.9, start, None, "t", "1"), start)
    return store.deliveries()[0]


def alerting_store(tmp_path: Path, rules: AlertRules) -> tuple[EventStore, Delivery]:
    """A store whose outbox owes the broker one alert: a fall, started a minute before T0."""
    store = EventStore.open(database_url(str(tmp_path / "events.db")), rules)
    return store, fall(store, "e1", T0 - timedelta(minutes=1))


def deliver(
    store: EventStore,
    rules: AlertRules,
    clock: Clock,
    after_sleep: Callable[[list[Delivery]], None] = lambda rows: None,
) -> list[Delivery]:
    """Run the deliverer on fake time until no row is pending (or a day has passed);
    `after_sleep` sees the rows, oldest first, after each of the deliverer's sleeps. Returns
    the rows as the delivery log has them, oldest first."""

    async def scenario() -> None:
        deliverer = Deliverer(
            store, rules.destinations, None, clock, clock.sleep, random.Random(7), POLL_S
        )

        def woke() -> None:
            after_sleep(store.deliveries()[::-1])
            pending = [r for r in store.deliveries() if r.state == "pending"]
            if not pending or clock.now > T0 + timedelta(days=1):
                deliverer.stop()

        clock.on_sleep = woke
        try:
            await deliverer.run()
        finally:
            await deliverer.aclose()

    asyncio.run(scenario())
    return store.deliveries()[::-1]


def received_once(subscriber: Subscriber, row: Delivery) -> None:
    """The subscriber got the alert exactly once: the webhook's body with the delivery id."""
    subscriber.client.publish(FENCE, b"", qos=1)
    subscriber.wait_on(FENCE)
    (message,) = subscriber.on(f"gd/alerts/{topic_id(CAMERA)}")
    assert message.json() == {"id": message_id(row), **row.payload}
    assert message.json()["type"] == "alert.started"
    assert message.json()["data"]["camera_id"] == CAMERA
    assert not message.retain
    assert [m.topic for m in subscriber.messages] == [message.topic, FENCE]


@pytest.mark.parametrize("qos", [1, 2])
def test_an_alert_reaches_the_broker_once_and_the_log_says_delivered(broker, tmp_path, qos):
    rules = rules_for(tmp_path, broker.port, qos=qos)
    store, row = alerting_store(tmp_path, rules)
    subscriber = Subscriber(broker.port, ["gd/alerts/#"])
    try:
        (done,) = deliver(store, rules, Clock())
        received_once(subscriber, row)
    finally:
        subscriber.close()
    assert (done.state, done.attempts, done.last_error, done.delivered_at) == (
        "delivered",
        1,
        None,
        T0,
    )


@pytest.mark.integration  # a mosquitto of its own
def test_a_broker_away_at_first_gets_the_alert_once_it_is_up(tmp_path):
    away = Broker(tmp_path)  # its port chosen, not started yet
    rules = rules_for(tmp_path, away.port, backoff_s=1, max_attempts=5)
    store, row = alerting_store(tmp_path, rules)
    clock = Clock()
    failures = 2
    subscribers: list[Subscriber] = []

    def start_after_failures(rows: list[Delivery]) -> None:
        (row,) = rows
        if row.attempts == failures and not subscribers:
            assert row.state == "pending"
            away.start()
            subscribers.append(Subscriber(away.port, ["gd/alerts/#"]))

    try:
        (done,) = deliver(store, rules, clock, start_after_failures)
        assert subscribers, "the deliverer never failed twice"
        received_once(subscribers[0], row)
    finally:
        for s in subscribers:
            s.close()
        away.stop()
    assert (done.state, done.attempts) == ("delivered", failures + 1)
    # the failure before the success stays in the log, as for webhooks
    assert done.last_error is not None
    assert done.last_error.startswith(f"cannot connect to 127.0.0.1:{away.port}: ")
    assert "ConnectionRefusedError" in done.last_error
    # the attempts waited the backoff: at least the lower half of 1 s, then of 2 s
    assert done.delivered_at is not None
    assert done.delivered_at - T0 >= timedelta(seconds=0.5 + 1.0)


@pytest.mark.integration  # a mosquitto of its own
def test_a_broker_that_stays_away_makes_the_alert_dead(tmp_path):
    away = Broker(tmp_path)  # never started: every connection is refused
    rules = rules_for(tmp_path, away.port, backoff_s=1, max_attempts=3)
    store, _ = alerting_store(tmp_path, rules)
    (done,) = deliver(store, rules, Clock())
    assert (done.state, done.attempts, done.delivered_at) == ("dead", 3, None)
    assert done.last_error is not None
    assert done.last_error.startswith(f"cannot connect to 127.0.0.1:{away.port}: ")


def test_a_stalled_broker_neither_acknowledges_nor_accepts_until_it_answers(broker, tmp_path):
    # SIGSTOP: the kernel still takes connections and bytes, mosquitto answers nothing
    rules = rules_for(tmp_path, broker.port, timeout_s=STALL_TIMEOUT_S, backoff_s=1)
    store, first = alerting_store(tmp_path, rules)
    subscriber = Subscriber(broker.port, ["gd/alerts/#"])
    clock = Clock()
    errors: list[str | None] = []

    def stall(rows: list[Delivery]) -> None:
        if len(rows) == 1:  # the first delivered on a connection kept: the broker stalls
            assert rows[0].state == "delivered"
            broker.process.send_signal(signal.SIGSTOP)
            fall(store, "e2", clock.now)
            return
        second = rows[1]
        if second.state == "pending" and second.attempts > len(errors):
            errors.append(second.last_error)
            if len(errors) == 2:  # no PUBACK on the kept connection, no CONNACK on a new one
                broker.process.send_signal(signal.SIGCONT)

    try:
        done = deliver(store, rules, clock, stall)
        subscriber.client.publish(FENCE, b"", qos=1)
        subscriber.wait_on(FENCE)
        got = [m.json() for m in subscriber.on(f"gd/alerts/{topic_id(CAMERA)}")]
    finally:
        broker.process.send_signal(signal.SIGCONT)
        subscriber.close()
    assert [r.state for r in done] == ["delivered", "delivered"]
    assert [r.attempts for r in done] == [1, 3]
    where = f"127.0.0.1:{broker.port}"
    assert errors == [
        f"{where} did not acknowledge within {STALL_TIMEOUT_S:g} s",
        f"{where} did not accept the connection within {STALL_TIMEOUT_S:g} s",
    ]
    assert done[1].last_error == errors[1]
    # the publish of the stalled attempt may reach subscribers once the broker resumes: at
    # least once, the `id` telling the copies apart from another alert
    assert got[0] == {"id": message_id(first), **first.payload}
    assert {m["id"] for m in got[1:]} == {message_id(done[1])}
    assert 2 <= len(got) <= 3


def test_the_servers_event_service_delivers_to_an_mqtt_destination(broker, tmp_path):
    # what gd-serve runs: the event service's own deliverer, on the wall clock
    rules = rules_for(tmp_path, broker.port)
    store, row = alerting_store(tmp_path, rules)
    subscriber = Subscriber(broker.port, ["gd/alerts/#"])

    async def serve() -> Delivery:
        service = EventService(store, 30, rules=rules)
        assert service.deliverer is not None, "no deliverer for a file of MQTT destinations"
        assert set(service.deliverer.destinations) == {"ward-broker"}
        service.start()
        try:
            while (done := store.deliveries()[0]).state == "pending":
                await asyncio.sleep(0.05)
            return done
        finally:
            await service.stop()

    try:
        done = asyncio.run(asyncio.wait_for(serve(), WAIT_S))
        received_once(subscriber, row)
    finally:
        subscriber.close()
    assert (done.state, done.attempts) == ("delivered", 1)


@pytest.mark.integration  # a mosquitto of its own
def test_an_alert_goes_over_tls_checked_against_the_brokers_ca(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    secure = Broker(tmp_path, tls=(cert, key))
    secure.start()
    subscriber = Subscriber(secure.port, ["gd/alerts/#"])  # plain listener, same broker
    try:
        rules = rules_for(tmp_path, secure.tls_port, tls="true", ca_file=cert)
        store, row = alerting_store(tmp_path, rules)
        (done,) = deliver(store, rules, Clock())
        received_once(subscriber, row)
        # without the CA the broker's certificate is refused, and nothing is sent
        untrusted = rules_for(tmp_path, secure.tls_port, tls="true", max_attempts=1)
        store, _ = alerting_store(tmp_path / "untrusted", untrusted)
        (refused,) = deliver(store, untrusted, Clock())
    finally:
        subscriber.close()
        secure.stop()
    assert (done.state, done.attempts) == ("delivered", 1)
    assert (refused.state, refused.attempts) == ("dead", 1)
    assert "SSLCertVerificationError" in (refused.last_error or "")
