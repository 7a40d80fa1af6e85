"""The webhook deliverer against a real HTTP receiver (Starlette on uvicorn, loopback) that
verifies every signature: retries with backoff, Retry-After, dead letters, and no wall-clock
waits (the deliverer's clock and sleep are a fake that the receiver reads too)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import pytest

from server.events.delivery import Deliverer, backoff_s, message_id, retry_after_s
from server.events.rules import WebhookDestination
from server.events.types import Delivery
from tests.helpers.webhooks import POLL_S, SECRETS, T0, Clock, Receiver, deliver_all


class MemoryOutbox:
    """The outbox's deliverer side, in memory; each outcome counts one attempt, as the
    store's does. `calls` keeps every outcome in order."""

    def __init__(self, claim: timedelta | None = None) -> None:
        self.claim = claim  # like the SQL store, lend due rows for this long
        self.rows: dict[int, Delivery] = {}
        self.calls: list[tuple[str, int, datetime, int | None]] = []
        self.lock = threading.Lock()  # the deliverer calls from worker threads

    def add(self, destination: str, payload: dict, event_id: str = "e1") -> Delivery:
        with self.lock:
            row = Delivery(
                id=len(self.rows) + 1,
                event_id=event_id,
                destination=destination,
                kind=payload["type"],
                payload=payload,
                state="pending",
                attempts=0,
                next_attempt_at=T0,
                created_at=T0,
            )
            self.rows[row.id] = row
            return row

    def pending(self) -> list[Delivery]:
        return [r for r in self.rows.values() if r.state == "pending"]

    def due(self, destinations: Collection[str], now: datetime, limit: int) -> list[Delivery]:
        with self.lock:
            rows = [
                r
                for r in self.rows.values()
                if r.state == "pending"
                and r.destination in destinations
                and r.next_attempt_at <= now
            ]
            rows = sorted(rows, key=lambda r: (r.created_at, r.id))[:limit]
            if self.claim is not None:
                rows = [replace(r, next_attempt_at=now + self.claim) for r in rows]
                self.rows.update((r.id, r) for r in rows)
            return rows

    def _outcome(self, name: str, delivery_id: int, at: datetime, status, **fields) -> None:
        with self.lock:
            row = self.rows[delivery_id]
            self.rows[delivery_id] = replace(
                row, attempts=row.attempts + 1, last_status=status, **fields
            )
            self.calls.append((name, delivery_id, at, status))

    def delivered(self, delivery_id: int, now: datetime, status: int | None) -> None:
        self._outcome("delivered", delivery_id, now, status, state="delivered", delivered_at=now)

    def retry(self, delivery_id: int, at: datetime, error: str, status: int | None) -> None:
        self._outcome("retry", delivery_id, at, status, next_attempt_at=at, last_error=error)

    def dead(self, delivery_id: int, now: datetime, error: str, status: int | None) -> None:
        self._outcome("dead", delivery_id, now, status, state="dead", last_error=error)

    def release(self, delivery_ids: Collection[int], at: datetime) -> None:
        with self.lock:
            for i in delivery_ids:
                if self.rows[i].state == "pending":
                    self.rows[i] = replace(self.rows[i], next_attempt_at=at)


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(
        clock: Clock, answers: list[tuple[int, dict[str, str]]], takes: timedelta = timedelta(0)
    ) -> Receiver:
        started.append(Receiver(clock, answers, takes))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def destination(url: str, **fields) -> WebhookDestination:
    return WebhookDestination(url=url, secrets=SECRETS, **{"backoff_s": 2.0, **fields})


def alert(n: int = 1) -> dict:
    return {"type": "alert.started", "timestamp": "2026-12-03T06:00:00Z", "data": {"n": n}}


def test_500_then_429_with_retry_after_then_200(receivers):
    clock = Clock()
    retry_after = 30
    receiver = receivers(clock, [(500, {}), (429, {"Retry-After": str(retry_after)})])
    outbox = MemoryOutbox()
    row = outbox.add("nurses", alert())
    hook = destination(receiver.url)
    deliver_all(outbox, {"nurses": hook}, clock)

    assert [r.problem for r in receiver.received] == [None, None, None]
    assert [json.loads(r.body) for r in receiver.received] == [row.payload] * 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {message_id(row)}
    assert [int(r.headers["webhook-timestamp"]) for r in receiver.received] == [
        int(r.at.timestamp()) for r in receiver.received
    ]
    assert [(c[0], c[3]) for c in outbox.calls] == [
        ("retry", 500),
        ("retry", 429),
        ("delivered", 200),
    ]
    first, second, third = (r.at for r in receiver.received)
    backoff = (outbox.calls[0][2] - first).total_seconds()  # attempt 1 failed: the base backoff
    assert hook.backoff_s / 2 <= backoff <= hook.backoff_s
    assert outbox.calls[0][2] <= second < outbox.calls[0][2] + timedelta(seconds=POLL_S)
    assert outbox.calls[1][2] == second + timedelta(seconds=retry_after)  # Retry-After, not 4 s
    assert outbox.calls[1][2] <= third < outbox.calls[1][2] + timedelta(seconds=POLL_S)
    done = outbox.rows[row.id]
    assert (done.state, done.attempts, done.last_status, done.delivered_at) == (
        "delivered",
        3,
        200,
        third,
    )


def test_a_receiver_that_always_fails_gets_max_attempts_then_the_row_is_dead(receivers):
    clock = Clock()
    hook_fields = {"max_attempts": 6, "backoff_s": 1.0, "backoff_max_s": 5.0}
    receiver = receivers(clock, [(503, {})] * 100)
    outbox = MemoryOutbox()
    row = outbox.add("nurses", alert())
    hook = destination(receiver.url, **hook_fields)
    deliver_all(outbox, {"nurses": hook}, clock)

    assert len(receiver.received) == hook.max_attempts
    assert all(r.problem is None for r in receiver.received)
    assert [c[0] for c in outbox.calls] == ["retry"] * (hook.max_attempts - 1) + ["dead"]
    for attempt, (call, sent) in enumerate(zip(outbox.calls, receiver.received, strict=False), 1):
        if call[0] == "retry":  # each wait drawn from the upper half of a doubling, capped ceiling
            ceiling = min(hook.backoff_max_s, hook.backoff_s * 2 ** (attempt - 1))
            assert ceiling / 2 <= (call[2] - sent.at).total_seconds() <= ceiling
    dead = outbox.rows[row.id]
    assert (dead.state, dead.attempts, dead.last_status, dead.last_error) == (
        "dead",
        hook.max_attempts,
        503,
        "HTTP 503",
    )


def test_410_gone_is_dead_at_once(receivers):
    clock = Clock()
    receiver = receivers(clock, [(410, {})])
    outbox = MemoryOutbox()
    row = outbox.add("nurses", alert())
    deliver_all(outbox, {"nurses": destination(receiver.url)}, clock)
    assert len(receiver.received) == 1
    assert (outbox.rows[row.id].state, outbox.rows[row.id].last_status) == ("dead", 410)


def test_refused_connections_and_timeouts_are_retried():
    clock = Clock()
    with socket.socket() as closed, socket.socket() as silent:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts, nobody answers: the request times out
        outbox = MemoryOutbox()
        refused = outbox.add("down", alert())
        unanswered = outbox.add("mute", alert())
        hooks = {
            "down": destination(f"http://127.0.0.1:{closed.getsockname()[1]}/hook"),
            "mute": destination(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout_s=0.2),
        }

        async def one_pass() -> int:
            async with httpx.AsyncClient() as client:
                deliverer = Deliverer(outbox, hooks, client, clock, clock.sleep)
                return await deliverer.deliver_due()

        assert asyncio.run(one_pass()) == 0
    assert outbox.rows[refused.id].state == "pending"
    assert outbox.rows[refused.id].last_error.startswith("ConnectError")
    assert outbox.rows[unanswered.id].last_error == "no answer within 0.2 s"
    for row in (refused, unanswered):
        assert outbox.rows[row.id].attempts == 1
        assert outbox.rows[row.id].last_status is None
        assert outbox.rows[row.id].next_attempt_at > clock.now


def test_a_failing_destination_holds_only_its_own_rows(receivers):
    clock = Clock()
    ok = receivers(clock, [])
    failing = receivers(clock, [(500, {})] * 10)
    outbox = MemoryOutbox()
    for n in range(3):
        outbox.add("ok", alert(n))
        outbox.add("failing", alert(n))
    hooks = {"ok": destination(ok.url), "failing": destination(failing.url)}

    async def one_pass() -> int:
        async with httpx.AsyncClient() as client:
            deliverer = Deliverer(outbox, hooks, client, clock, clock.sleep)
            return await deliverer.deliver_due()

    assert asyncio.run(one_pass()) == 3
    assert [json.loads(r.body)["data"]["n"] for r in ok.received] == [0, 1, 2]
    assert [json.loads(r.body)["data"]["n"] for r in failing.received] == [0]  # it waits


def test_the_loop_outlives_an_outbox_failure(receivers):
    clock = Clock()
    receiver = receivers(clock, [])

    class Flaky(MemoryOutbox):
        failures = 1

        def due(self, destinations, now, limit):
            if self.failures:
                self.failures -= 1
                raise OSError("database is away")
            return super().due(destinations, now, limit)

    outbox = Flaky()
    outbox.add("nurses", alert())
    deliver_all(outbox, {"nurses": destination(receiver.url)}, clock)
    assert [c[0] for c in outbox.calls] == ["delivered"]
    assert receiver.received[0].at == T0 + timedelta(seconds=POLL_S)  # one poll later


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half():
    hook = destination("http://127.0.0.1:9/", backoff_s=1.5, backoff_max_s=10.0)
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(hook.backoff_max_s, hook.backoff_s * 2 ** (attempt - 1))
        waits = [backoff_s(attempt, hook, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not one value


def test_retry_after_in_seconds_or_as_an_http_date():
    now = T0
    assert retry_after_s("30", now) == 30
    assert retry_after_s(" 0 ", now) == 0
    assert retry_after_s("Thu, 03 Dec 2026 06:01:30 GMT", now) == 90
    assert retry_after_s("Thu, 03 Dec 2026 05:00:00 GMT", now) == 0  # the past: now
    assert retry_after_s("999999", now) == 3600  # capped
    for unreadable in (None, "soon", "-5", "1.5"):
        assert retry_after_s(unreadable, now) is None


def test_a_row_is_not_attempted_when_the_attempt_could_outlast_the_outboxs_loan(receivers):
    clock = Clock()
    receiver = receivers(clock, [], takes=timedelta(seconds=20))
    claim = timedelta(seconds=60)
    outbox = MemoryOutbox(claim=claim)
    for n in range(4):
        outbox.add("nurses", alert(n))
    hook = destination(receiver.url, timeout_s=10)

    async def one_pass() -> int:
        async with httpx.AsyncClient() as client:
            return await Deliverer(outbox, {"nurses": hook}, client, clock).deliver_due()

    # each answer moves the clock 20 s on: the 4th could not finish inside the 60 s loan
    assert asyncio.run(one_pass()) == 3
    assert [r.at - T0 for r in receiver.received] == [timedelta(seconds=s) for s in (0, 20, 40)]
    assert [r.state for r in outbox.rows.values()] == ["delivered"] * 3 + ["pending"]
    assert outbox.rows[4].attempts == 0
    clock.now = T0 + claim  # the loan ends: the row is due again, and goes
    assert asyncio.run(one_pass()) == 1
