"""The event store in a running server: opened from the settings, fed by the stream bus, its
calls kept off the event loop, its changes on the live feed, its retention on a timer.

Every store call that writes goes through one thread, in the order submitted (an event's
start before its end), and what it returns (`Change`s, `CameraRecord`s) is published on the
feed once committed. A call that fails is logged; the streams go on. One that fails because the
database is away (stopped, unreachable, full, read-only) is kept in memory with those after it
and written in order when the database answers again (`store.Backlog`, retried every
`check_every_s`); meanwhile `health()` (on /readyz) says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from server.eventbus import EventBus
from server.events.delivery import Deliverer
from server.events.feed import Feed
from server.events.notify import FeedRelay
from server.events.recorder import EventRecorder
from server.events.references import References
from server.events.rules import AlertRules, RulesError
from server.events.store import (
    Backlog,
    CameraRecord,
    Change,
    EventStore,
    StoreError,
    StoreUnavailable,
    database_url,
    redacted,
)
from server.settings import Settings, SettingsError, flag

log = logging.getLogger("gd.server")
T = TypeVar("T")
OFF = "off"  # GD_EVENTS_DB=off: no event store, no event API
RETENTION_EVERY_S = 3600.0
CHECK_EVERY_S = 2.0  # how often an unavailable database is tried again (an idle one, pinged)


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


def _fix(settings: Settings) -> str:
    """What to do when the store does not open: for a SQLite file, where it can be written."""
    value = settings.events_db
    if value is not None and "://" in value:
        return ""
    return (
        f"; the SQLite file must be creatable and writable: make its folder writable by this "
        f"user and free some disk space, or set {flag('events_db')} (GD_EVENTS_DB) to a "
        f"writable file, or to 'off' to run without the event store"
    )


class EventService:
    def __init__(
        self,
        store: EventStore,
        retention_days: float,
        clock: Callable[[], datetime] = utc_now,
        flush_every_s: float = 1.0,
        retention_every_s: float = RETENTION_EVERY_S,
        rules: AlertRules | None = None,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.store, self.clock = store, clock
        self.retention = timedelta(days=retention_days)
        self.flush_every_s, self.retention_every_s = flush_every_s, retention_every_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gd-events")
        self.check_every_s = check_every_s
        self.loop: asyncio.AbstractEventLoop | None = None  # the running one, from `start`
        self.backlog = Backlog(self._publish_soon, clock)  # changes kept while the db is away
        self.feed = Feed()
        # on PostgreSQL, the feed to and from the other servers on it; None on SQLite
        self.relay = FeedRelay.for_store(store, self.feed)
        self.recorder = EventRecorder(store, self.submit, self.drain, clock)
        self.tasks: list[asyncio.Task] = []
        self.last: asyncio.Future | None = None  # the newest call submitted
        self.rules = rules
        destinations = rules.destinations if rules is not None else {}
        self.deliverer = Deliverer(store, destinations) if destinations else None
        self.references = References(self, clock)

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
            raise SettingsError(f"events_db: {e}{_fix(settings)}") from None
        log.info("event store: %s", redacted(url))
        service = cls(store, settings.events_retention_days, rules=rules)
        service.references.load()
        bus.subscribe(service.recorder)
        return service

    def start(self) -> None:
        """The flush, retention and database check timers (needs the running event loop)."""
        self.loop = asyncio.get_running_loop()
        self.tasks = [
            asyncio.create_task(self._every(self.flush_every_s, self.recorder.flush)),
            asyncio.create_task(self._every(self.retention_every_s, self.expire, first=0.0)),
            asyncio.create_task(self._every(self.check_every_s, self.check)),
        ]
        if self.rules is not None and (every := self.rules.repeat_every_s) is not None:
            self.tasks.append(asyncio.create_task(self._every(every, self.repeat)))
        if self.deliverer is not None:
            self.tasks.append(asyncio.create_task(self.deliverer.run()))
        if self.relay is not None:
            self.relay.start()

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
        await asyncio.get_running_loop().run_in_executor(self.executor, self._last_try)
        if self.relay is not None:  # after the last changes are on the feed: they go out too
            await self.relay.stop()
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
        since = now - timedelta(seconds=self.rules.repeat_for_s)
        self.submit(self.store.repeat_alerts, since, now, keep=False)  # the next tick repeats

    def expire(self) -> None:
        """Retention: delete the ended events older than `retention_days`, unless kept."""
        before = self.clock() - self.retention
        self.submit(self._expire, before, keep=False)  # the next tick deletes them

    def _expire(self, before: datetime) -> None:
        if n := self.store.delete_expired(before):
            log.info("retention: deleted %d event(s) that started before %s", n, before)

    def submit(
        self, call: Callable[..., T], *args: Any, keep: bool = True
    ) -> asyncio.Future[T | None]:
        """Run `call` on the store's thread after everything submitted before it; publish
        what it returns; log what it raises (the caller need not wait). While the database
        is unavailable the call is kept and run when it returns (the result: None), or, when
        not `keep`, fails with StoreUnavailable."""
        run = partial(self.backlog.run, partial(call, *args), keep)
        future = asyncio.get_running_loop().run_in_executor(self.executor, run)
        future.add_done_callback(self._done)
        self.last = future
        return future

    async def call(self, call: Callable[..., T], *args: Any) -> T:
        """`submit` and wait: the result, or what it raised (StoreUnavailable while the
        database is away: a caller waiting for an answer is not kept waiting)."""
        return cast(T, await self.submit(call, *args, keep=False))  # not kept: never None

    def check(self) -> None:
        """Write the kept changes if the database answers again; with none kept, ping it, so
        that `health()` notices an outage before the next write does."""
        run = partial(self.backlog.retry, self.store.ping)
        asyncio.get_running_loop().run_in_executor(self.executor, run).add_done_callback(self._done)

    def _last_try(self) -> None:
        if self.backlog.kept and not self.backlog.retry():
            log.error(
                "event store still unavailable at shutdown: %d kept change(s) lost",
                self.backlog.kept,
            )

    def health(self) -> dict[str, Any]:
        """The store's part of /readyz: `events_db` "ok", or why it is unavailable, with how
        many changes wait in memory and how many were dropped."""
        backlog = self.backlog
        problem, since = backlog.problem, backlog.since
        if problem is None:
            return {"events_db": "ok", "events_dropped": backlog.dropped}
        at = since.isoformat() if since is not None else "?"
        return {
            "events_db": f"unavailable since {at}: {problem}",
            "events_kept": backlog.kept,
            "events_dropped": backlog.dropped,
        }

    async def drain(self) -> None:
        """Returns once every call submitted so far has run."""
        if self.last is not None:
            await asyncio.wait([self.last])

    def _done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        if (e := future.exception()) is not None:
            if not isinstance(e, StoreUnavailable):  # that one the backlog logged, once
                log.error("event store: %s", e, exc_info=e)
            return
        self._publish(future.result())

    def _publish_soon(self, result: Any) -> None:
        """`_publish` from the store's thread (a kept call's result)."""
        assert self.loop is not None  # calls are kept only after `start`
        self.loop.call_soon_threadsafe(self._publish, result)

    def _publish(self, result: Any) -> None:
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, Change | CameraRecord):
                self.feed.publish(item)
