"""The live feed across servers: several gd-serve on one PostgreSQL see each other's changes.

What a server publishes on its own feed (server/events/feed.py), once committed, it also
NOTIFYs on the channel `gd_feed`: which event changed and how, or which camera's state was
stored, tagged with the server's random id. Every server LISTENs on a connection of its own and,
for each notice from another server, reads that event or camera from the store and delivers it
to its own subscribers (its dashboard, its SSE clients). Notices carry ids, not rows: PostgreSQL
caps a payload at 8000 bytes (an event's note alone may reach that), and the row read is the
row as committed.

Camera references (server/events/references.py) travel the same way: a server that put or
deleted one NOTIFYs the camera's id, and the others re-read that row into their memory.

Best effort, like the feed itself: notices sent while a listener is away (the database
restarting) are not replayed; `GET /v1/events` and `GET /v1/cameras` always read the store.
What the servers keep in memory, the references, is compared with the store every
`SYNC_EVERY_S` instead: a missed notice delays a change by that much at most.
SQLite: one server per file, no relay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from itertools import count
from typing import Any, Protocol, get_args

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.events.feed import Feed, Item
from server.events.store import Change, ChangeKind, EventStore

log = logging.getLogger("gd.server")

CHANNEL = "gd_feed"
MAX_PENDING = 10_000  # notices waiting to be sent (the database away): beyond, dropped
BATCH = 500  # notices sent in one transaction
FLUSH_S = 5.0  # at stop, how long the last notices may take to go out
SYNC_EVERY_S = 30.0  # how often the references in memory are compared with the store
# The listener's connection: an unreachable host fails in seconds, and a dead TCP peer (a
# database host gone without a word) ends its wait within a minute instead of the system's two
# hours (a Unix socket ignores the keepalives).
LISTENER = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3}  # fmt: skip


@dataclass(frozen=True)
class ReferenceChanged:
    """This server put or deleted the camera's reference (a notice, not a feed item)."""

    camera_id: str


class Mirror(Protocol):
    """What a server keeps in memory of rows the other servers change (`References`)."""

    async def refresh(self, camera_id: str) -> None:
        """Re-read this camera's row: another server changed it."""

    async def sync(self) -> None:
        """Compare everything with the store and re-read what differs: notices were missed."""


class FeedRelay:
    """Relays one server's feed to the other servers of its PostgreSQL, and theirs to it.
    `start()` on the event loop, `await stop()` before the store closes."""

    def __init__(
        self,
        store: EventStore,
        feed: Feed,
        connect_args: dict[str, Any],
        reconnect_s: float = 1.0,
        max_reconnect_s: float = 30.0,
        sync_every_s: float = SYNC_EVERY_S,
    ) -> None:
        self.store, self.feed, self.connect_args = store, feed, connect_args
        self.reconnect_s, self.max_reconnect_s = reconnect_s, max_reconnect_s
        self.sync_every_s = sync_every_s
        self.references: Mirror | None = None  # set by the server's `References`
        self.origin = uuid.uuid4().hex  # tells this server's notices from the others'
        self.numbers = count()  # PostgreSQL folds identical notices of one transaction
        self.listening = threading.Event()  # set while LISTEN is on (tests, a readiness check)
        self.outgoing: asyncio.Queue[Item | ReferenceChanged] | None = None
        self.tasks: list[asyncio.Task] = []
        self.dropped = 0  # notices never sent (the queue full)

    @classmethod
    def for_store(cls, store: EventStore, feed: Feed) -> FeedRelay | None:
        """A relay on a PostgreSQL store; None on SQLite (one server per file)."""
        engine = store.engine
        if engine.dialect.name != "postgresql":
            return None
        _, kwargs = engine.dialect.create_connect_args(engine.url)  # what the pool connects with
        kwargs.pop("context", None)  # the pool's (sync) adapters
        return cls(store, feed, {**LISTENER, **kwargs}, sync_every_s=SYNC_EVERY_S)

    def start(self) -> None:
        self.outgoing = asyncio.Queue(MAX_PENDING)
        self.feed.relays.append(self.send)
        self.tasks = [
            asyncio.create_task(self._send()),
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._sync()),
        ]

    async def stop(self) -> None:
        """Send what is queued (the last changes before a shutdown), then stop."""
        if self.send in self.feed.relays:
            self.feed.relays.remove(self.send)
        if self.outgoing is not None:
            try:
                async with asyncio.timeout(FLUSH_S):
                    await self.outgoing.join()
            except TimeoutError:
                log.warning("feed relay: %d notice(s) not sent at stop", self.outgoing.qsize())
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.listening.clear()

    # --- this server's changes, out --------------------------------------------------------

    def send(self, item: Item | ReferenceChanged) -> None:
        """The feed's relay hook: queue a notice of a change this server committed."""
        assert self.outgoing is not None
        try:
            self.outgoing.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def reference_changed(self, camera_id: str) -> None:
        """This server put or deleted the camera's reference: tell the others (once started;
        before, there are no streams to miss it)."""
        if self.outgoing is not None:
            self.send(ReferenceChanged(camera_id))

    def notice(self, item: Item | ReferenceChanged) -> str:
        what: dict[str, Any]
        if isinstance(item, Change):
            what = {"event": item.event.id, "change": item.change}
        elif isinstance(item, ReferenceChanged):
            what = {"reference": item.camera_id}
        else:
            what = {"camera": item.id}
        return json.dumps({"from": self.origin, "n": next(self.numbers), **what})

    async def _send(self) -> None:
        """Queued notices out, in order, many to a transaction."""
        assert self.outgoing is not None
        failing = False
        while True:
            batch = [await self.outgoing.get()]
            while len(batch) < BATCH and not self.outgoing.empty():
                batch.append(self.outgoing.get_nowait())
            try:
                await asyncio.to_thread(self._notify, [self.notice(i) for i in batch])
                if failing:
                    log.info("feed relay: notifying the other servers again")
                failing = False
            except SQLAlchemyError as e:
                if not failing:  # once per outage, not once per change
                    log.warning(
                        "feed relay: cannot notify the other servers (%s); their feeds miss "
                        "this server's changes until the database answers",
                        str(e).splitlines()[0],
                    )
                failing = True
            finally:
                for _ in batch:
                    self.outgoing.task_done()

    def _notify(self, payloads: list[str]) -> None:
        # one transaction: its notices reach the listeners together, in this order, at commit
        with self.store.engine.begin() as connection:
            connection.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                [{"channel": CHANNEL, "payload": p} for p in payloads],
            )

    # --- the other servers' changes, in ----------------------------------------------------

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, connecting again (backing off) when it breaks."""
        import psycopg  # PostgreSQL's driver: a server on SQLite never loads it (0.2 s a start)

        wait, lost = self.reconnect_s, False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    autocommit=True, **self.connect_args
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if lost:
                        log.info("feed relay: listening to the other servers again")
                    wait, lost = self.reconnect_s, False
                    async for notify in connection.notifies():
                        await self.receive(notify.payload)
            except psycopg.Error as e:
                if not lost:
                    log.warning(
                        "feed relay: not listening to the other servers (%s); trying again",
                        str(e).splitlines()[0] if str(e) else type(e).__name__,
                    )
                lost = True
            finally:
                self.listening.clear()
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.max_reconnect_s)

    async def receive(self, payload: str) -> None:
        """One notice: another server's change, read from the store, to this server's feed."""
        try:
            notice = json.loads(payload)
            if notice["from"] == self.origin:
                return
            if "reference" in notice:
                if self.references is not None:  # it logs what it cannot read
                    await self.references.refresh(str(notice["reference"]))
                return
            if "event" in notice:
                change = notice["change"]
                if change not in get_args(ChangeKind):
                    raise ValueError(change)
                found = await asyncio.to_thread(self.store.get_alerted, str(notice["event"]))
                item: Item | None = None if found is None else Change(change, *found)
            else:
                item = await asyncio.to_thread(self.store.camera, str(notice["camera"]))
        except (ValueError, KeyError, TypeError):
            log.warning("feed relay: ignored a notice it cannot read: %.200r", payload)
            return
        except SQLAlchemyError as e:
            log.warning("feed relay: cannot read a change: %s", str(e).splitlines()[0])
            return
        if item is not None:  # None: deleted since (retention)
            self.feed.deliver(item)

    # --- what notices missed ---------------------------------------------------------------

    async def _sync(self) -> None:
        """Every `sync_every_s`, the references in memory compared with the store's."""
        while True:
            await asyncio.sleep(self.sync_every_s)
            if self.references is not None:
                await self.references.sync()
