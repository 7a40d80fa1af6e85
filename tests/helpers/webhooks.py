"""A real webhook receiver (Starlette on uvicorn, loopback) that verifies every signature and
answers from a script, the clocks it reads (a fake one that sleeping moves on, or the wall
clock for a real server), and running a deliverer on fake time until nothing is pending.

(Moved here from tests/server/alerts/test_delivery.py, so that other test modules share it.)
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.events.delivery import Deliverer
from server.events.webhooks import WebhookVerificationError, new_secret, verify
from tests.helpers.live import uvicorn_server

T0 = datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC)
SECRETS = (new_secret(), new_secret())  # newest first, as in a rules file mid-rotation
POLL_S = 1.0


class Clock:
    """The deliverer's clock and sleep: sleeping moves the time on at once."""

    def __init__(self) -> None:
        self.now = T0
        self.on_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.on_sleep()
        await asyncio.sleep(0)


class WallClock:
    """The receiver's clock for a real server: the time now. (The receiver adds its fake
    answering time to `now`; a wall clock has none to add, so the setter ignores it.)"""

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    @property
    def now(self) -> datetime:
        return self()

    @now.setter
    def now(self, value: datetime) -> None:
        pass


@dataclass
class Received:
    at: datetime
    headers: dict[str, str]
    body: bytes
    problem: str | None  # why verification failed; None: a valid signed delivery


class Receiver:
    """A webhook endpoint on loopback that answers from a script, then 200."""

    def __init__(
        self,
        clock: Clock | WallClock,
        answers: list[tuple[int, dict[str, str]]],
        takes: timedelta = timedelta(0),
    ) -> None:
        self.clock, self.answers, self.takes = clock, list(answers), takes
        self.received: list[Received] = []
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn_server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no receiver"
            time.sleep(0.01)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify(body, request.headers, [SECRETS[1]], now=self.clock())  # the older secret
            problem = None
        except WebhookVerificationError as e:
            problem = str(e)
        self.received.append(Received(self.clock(), dict(request.headers), body, problem))
        self.clock.now += self.takes  # how long the receiver takes to answer, in fake time
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return Response(status_code=status, headers=headers)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def deliver_all(outbox, destinations: dict, clock: Clock, limit_s: float = 86400) -> None:
    """Run the deliverer until nothing is pending in `outbox` (its `pending()`), or a day of
    fake time has passed."""

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            deliverer = Deliverer(
                outbox, destinations, client, clock, clock.sleep, random.Random(7), POLL_S
            )

            def maybe_stop() -> None:
                if not outbox.pending() or clock.now > T0 + timedelta(seconds=limit_s):
                    deliverer.stop()

            clock.on_sleep = maybe_stop
            await deliverer.run()

    asyncio.run(scenario())
