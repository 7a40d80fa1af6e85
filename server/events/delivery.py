"""The alert deliverer: takes due outbox rows, sends them (a signed webhook POST, or an MQTT
publish), records how it went.

At least once: a row leaves the outbox's pending state only when the receiver answered 2xx
(delivered), 410 Gone (dead: the receiver says never again), or the last attempt failed
(dead); an MQTT broker, when it acknowledged the message (server/events/mqtt_sender.py).
Everything else (other statuses, timeouts, refused connections) is tried again after
an exponential backoff with jitter, or after the receiver's `Retry-After`. Every attempt of
one row carries the same `webhook-id` (on MQTT, the body's `id`), so a receiver drops the
duplicates that at-least-once delivery makes. Order per camera and destination: the outbox
hands out a camera's alert only once its earlier ones to that destination are done
(`EventStore.due`), and each destination's rows are sent in the outbox's order, stopping at
the first failure. Clock, sleep and randomness are injected: tests run without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.events import webhooks
from server.events.mqtt import topic_id
from server.events.mqtt_sender import MqttSender, MqttSendError
from server.events.rules import Destination, MqttDestination, WebhookDestination
from server.events.types import Delivery, Outbox

# httpx is imported by the first Deliverer (alert rules with destinations): a server without
# any starts without it (a tenth of its start-up).
if TYPE_CHECKING:
    import httpx

log = logging.getLogger("gd.server")

RETRY_AFTER_MAX_S = 3600.0  # a receiver's Retry-After is honoured up to an hour


def _utc_now() -> datetime:
    return datetime.now(UTC)


def message_id(delivery: Delivery) -> str:
    """The `webhook-id` of every attempt of one delivery (the event's id keeps it unique
    across databases; the row's id, across the alerts of one event)."""
    return f"msg_{delivery.event_id}_{delivery.id}"


def body(delivery: Delivery, **fields: Any) -> bytes:
    """The exact bytes signed and sent: compact JSON, the same on every attempt; `fields`
    go before the payload's own (an MQTT message's `id`, where no header can carry it)."""
    content = {**fields, **delivery.payload}
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


def mqtt_topic(delivery: Delivery, destination: MqttDestination) -> str:
    """`<topic>/<camera>`: the camera as its MQTT events have it (`topic_id`)."""
    return f"{destination.topic}/{topic_id(delivery.payload['data']['camera_id'])}"


def backoff_s(attempt: int, destination: Destination, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based): `backoff_s` doubling each
    time, capped at `backoff_max_s`, then drawn from its upper half ("equal jitter": never
    zero, and receivers coming back are not hit by every sender at once)."""
    ceiling = min(destination.backoff_max_s, destination.backoff_s * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header in seconds from `now` (delta-seconds or an HTTP date), capped
    at RETRY_AFTER_MAX_S; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class Deliverer:
    """Delivers the outbox rows of the destinations; `run()` until `stop()`, then `aclose()`."""

    def __init__(
        self,
        outbox: Outbox,
        destinations: Mapping[str, Destination],
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        poll_s: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.outbox = outbox
        self.destinations = dict(destinations)
        self._own_client = client is None
        if client is None:
            import httpx

            client = httpx.AsyncClient(follow_redirects=False)
        self.client = client
        self.clock, self.sleep, self.poll_s, self.batch = clock, sleep, poll_s, batch
        self.rng = rng or random.Random()
        self._stopped = asyncio.Event()
        # one connection per MQTT destination, made by its first send (in a worker thread)
        self.senders = {
            name: MqttSender(name, d)
            for name, d in self.destinations.items()
            if isinstance(d, MqttDestination)
        }

    def stop(self) -> None:
        """End `run()` after its current pass (or cancel its task: nothing is lost either way,
        a row interrupted mid-attempt is still pending and is sent again)."""
        self._stopped.set()

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()
        await asyncio.gather(*(asyncio.to_thread(s.close) for s in self.senders.values()))

    async def run(self) -> None:
        """Deliver what is due, then sleep `poll_s`, until `stop()`; straight on only after a
        full batch all delivered (more may be waiting). A failing outbox (the database away)
        is logged and tried again: delivery waits, nothing is lost."""
        while not self._stopped.is_set():
            try:
                delivered = await self.deliver_due()
            except Exception:
                log.exception("alert delivery: the outbox failed; trying again")
                delivered = 0
            if delivered < self.batch and not self._stopped.is_set():
                await self.sleep(self.poll_s)

    async def deliver_due(self) -> int:
        """One pass over the due rows, each attempted at most once; returns how many were
        delivered. Destinations are served concurrently, each one's rows in the outbox's
        order, until one fails."""
        if not self.destinations:
            return 0
        taken = self.clock()
        rows = await asyncio.to_thread(self.outbox.due, list(self.destinations), taken, self.batch)
        queues: dict[str, list[Delivery]] = {}
        for row in rows:
            queues.setdefault(row.destination, []).append(row)
        counts = await asyncio.gather(*(self._deliver_queue(q, taken) for q in queues.values()))
        return sum(counts)

    async def _deliver_queue(self, rows: list[Delivery], taken: datetime) -> int:
        for delivered, row in enumerate(rows):
            timeout = timedelta(seconds=self.destinations[row.destination].timeout_s)
            if row.next_attempt_at > taken and self.clock() + timeout > row.next_attempt_at:
                # the outbox lent the row until next_attempt_at (another server may take it
                # after): one that could outlast the loan waits for the next pass
                return delivered
            if not await self.attempt(row):
                # the receiver is failing: its other rows wait one backoff step rather than
                # each spend a timeout (or hammer a receiver asking us to slow down) now, and
                # rather than the whole loan (a minute) the outbox gave them
                wait = timedelta(seconds=self.destinations[row.destination].backoff_s)
                rest = [r.id for r in rows[delivered + 1 :]]
                await asyncio.to_thread(self.outbox.release, rest, self.clock() + wait)
                return delivered
        return len(rows)

    async def attempt(self, row: Delivery) -> bool:
        """Send one row once and record the outcome; True when it was delivered."""
        destination = self.destinations[row.destination]
        if isinstance(destination, MqttDestination):
            status, retry_after, error = None, None, await self._publish(row, destination)
        else:
            status, retry_after, error = await self._post(row, destination)
        done = self.clock()
        if error is None:
            await asyncio.to_thread(self.outbox.delivered, row.id, done, status)
            return True
        attempt = row.attempts + 1
        if status == 410 or attempt >= destination.max_attempts:
            why = "the receiver answered 410 Gone" if status == 410 else f"attempt {attempt}"
            log.warning("alert %s to %s dead (%s): %s", row.id, row.destination, why, error)
            await asyncio.to_thread(self.outbox.dead, row.id, done, error, status)
            return False
        wait = retry_after if retry_after is not None else backoff_s(attempt, destination, self.rng)
        at = done + timedelta(seconds=wait)
        await asyncio.to_thread(self.outbox.retry, row.id, at, error, status)
        return False

    async def _post(
        self, row: Delivery, destination: WebhookDestination
    ) -> tuple[int | None, float | None, str | None]:
        """One signed POST: the receiver's status (None: no answer), its Retry-After, and
        what failed, in words (None: a 2xx, delivered)."""
        import httpx

        content = body(row)
        headers = {
            "content-type": "application/json",
            "user-agent": "gd-detect-webhooks",
            **webhooks.headers(message_id(row), self.clock(), content, destination.secrets),
        }
        try:
            async with self.client.stream(
                "POST",
                str(destination.url),
                content=content,
                headers=headers,
                timeout=destination.timeout_s,
            ) as response:  # the body is never read: a status is all a receiver says
                status = response.status_code
                retry_after = retry_after_s(response.headers.get("retry-after"), self.clock())
        except httpx.TimeoutException:
            return None, None, f"no answer within {destination.timeout_s:g} s"
        except httpx.HTTPError as e:
            return None, None, f"{type(e).__name__}: {e}"
        return status, retry_after, None if 200 <= status < 300 else f"HTTP {status}"

    async def _publish(self, row: Delivery, destination: MqttDestination) -> str | None:
        """One MQTT publish, in a worker thread (it waits for the broker's acknowledgement);
        None when the broker took it, else why not."""
        content = body(row, id=message_id(row))
        sender = self.senders[row.destination]
        try:
            await asyncio.to_thread(sender.send, mqtt_topic(row, destination), content)
        except MqttSendError as e:
            return str(e)
        return None
