"""The event store in a running server: opened from the settings, fed by the stream bus, its
calls kept off the event loop, its changes on the live feed, its retention on a timer.

Every store call that writes goes through one thread, in the order submitted (an event's
start before its end), and what it returns (`Change`s, `CameraRecord`s) is published on the
feed once committed. A call that fails is logged; the streams go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from server.eventbus import EventBus
from server.events.delivery import WebhookDeliverer
from server.events.feed import Feed
from server.events.recorder import EventRecorder
from server.events.rules import AlertRules, RulesError
from server.events.store import (
    CameraRecord,
    Change,
    EventStore,
    StoreError,
    database_url,
    redacted,
)
from server.settings import Settings, SettingsError

log = logging.getLogger("gd.server")
T = TypeVar("T")
OFF = "off"  # GD_EVENTS_DB=off: no event store, no event API
RETENTION_EVERY_S = 3600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def events_url(settings: Settings) -> str | None:
    """The store's URL from the settings: `events_db` (a URL or a SQLite path), else
    DATA_DIR/events.db; None when off."""
    value = settings.events_db
    if value is not None and value.strip().lower() == OFF:
        return None
    return database_url(value or str(Path(settings.data_dir) / "events.db"))


def load_rules(settings: Settings, labels: Collection[str]) -> AlertRules | None:
    """The alert rules file of the settings, checked against the model's labels."""
    if settings.alert_rules is None:
        return None
    try:
        return AlertRules.load(Path(settings.alert_rules), labels)
    except RulesError as e:
        raise SettingsError(str(e)) from None


class EventService:
    def __init__(
        self,
        store: EventStore,
        retention_days: float,
        clock: Callable[[], datetime] = utc_now,
        flush_every_s: float = 1.0,
        retention_every_s: float = RETENTION_EVERY_S,
        rules: AlertRules | None = None,
    ) -> None:
        self.store, self.clock = store, clock
        self.retention = timedelta(days=retention_days)
        self.flush_every_s, self.retention_every_s = flush_every_s, retention_every_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gd-events")
        self.feed = Feed()
        self.recorder = EventRecorder(store, self.submit, self.drain, clock)
        self.tasks: list[asyncio.Task] = []
        self.last: asyncio.Future | None = None  # the newest call submitted
        self.rules = rules
        webhooks = rules.webhooks if rules is not None else {}
        self.deliverer = WebhookDeliverer(store, webhooks) if webhooks else None

    @classmethod
    def open(
        cls, settings: Settings, bus: EventBus, labels: Collection[str]
    ) -> EventService | None:
        """Open (and migrate) the store, read the alert rules (`labels`: the model's actions)
        and listen to the streams; None when the settings turn the store off. A store that
        cannot open, or a bad rules file, is a `SettingsError`."""
        rules = load_rules(settings, labels)
        try:
            url = events_url(settings)
            if url is None:
                if rules is not None:
                    raise SettingsError("alert_rules: alerts need the event store (events_db)")
                return None
            store = EventStore.open(url, rules)
        except (StoreError, OSError) as e:
            raise SettingsError(f"events_db: {e}") from None
        log.info("event store: %s", redacted(url))
        service = cls(store, settings.events_retention_days, rules=rules)
        bus.subscribe(service.recorder)
        return service

    def start(self) -> None:
        """The flush and retention timers (needs the running event loop)."""
        self.tasks = [
            asyncio.create_task(self._every(self.flush_every_s, self.recorder.flush)),
            asyncio.create_task(self._every(self.retention_every_s, self.expire, first=0.0)),
        ]
        if self.rules is not None and (every := self.rules.repeat_every_s) is not None:
            self.tasks.append(asyncio.create_task(self._every(every, self.repeat)))
        if self.deliverer is not None:
            self.tasks.append(asyncio.create_task(self.deliverer.run()))

    async def stop(self) -> None:
        if self.deliverer is not None:
            self.deliverer.stop()  # what it was sending stays pending, sent after a restart
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.deliverer is not None:
            await self.deliverer.aclose()
        self.recorder.flush()
        await self.drain()
        self.executor.shutdown(wait=True)
        self.store.close()

    async def _every(self, seconds: float, call: Callable[[], Any], first: float | None = None):
        await asyncio.sleep(seconds if first is None else first)
        while True:
            call()
            await asyncio.sleep(seconds)

    def repeat(self) -> None:
        """Alerts repeat until acknowledged: offer the recent unreviewed events again."""
        assert self.rules is not None
        now = self.clock()
        self.submit(self.store.repeat_alerts, now - timedelta(seconds=self.rules.repeat_for_s), now)

    def expire(self) -> None:
        """Retention: delete the ended events older than `retention_days`, unless kept."""
        before = self.clock() - self.retention
        self.submit(self._expire, before)

    def _expire(self, before: datetime) -> None:
        if n := self.store.delete_expired(before):
            log.info("retention: deleted %d event(s) that started before %s", n, before)

    def submit(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `call` on the store's thread after everything submitted before it; publish
        what it returns; log what it raises (the caller need not wait)."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, call, *args)
        future.add_done_callback(self._done)
        self.last = future
        return future

    async def call(self, call: Callable[..., T], *args: Any) -> T:
        """`submit` and wait: the result, or what it raised."""
        return await self.submit(call, *args)

    async def drain(self) -> None:
        """Returns once every call submitted so far has run."""
        if self.last is not None:
            await asyncio.wait([self.last])

    def _done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        if (e := future.exception()) is not None:
            log.error("event store: %s", e, exc_info=e)
            return
        result = future.result()
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, Change | CameraRecord):
                self.feed.publish(item)
