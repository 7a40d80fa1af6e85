"""A client of a server's live feed (Server-Sent Events, `GET /v1/events/feed`), in a thread."""

from __future__ import annotations

import json
import threading

import httpx

from tests.helpers.live import TOKEN, LiveServer


class FeedReader:
    """Reads `server`'s feed in a thread of its own, from `: subscribed` until a `data:` line
    that contains `last`; `lines` are those read so far."""

    def __init__(self, server: LiveServer, last: str, token: str = TOKEN) -> None:
        self.url, self.last = f"{server.url}/v1/events/feed", last
        self.headers = {"Authorization": f"Bearer {token}"}
        self.lines: list[str] = []
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # changes committed from now on reach this reader
        assert self.subscribed.wait(10), "the feed did not open"

    def _read(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as response:
            for line in response.iter_lines():
                self.lines.append(line)
                self.subscribed.set()
                if line.startswith("data:") and self.last in line:
                    return

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the feed did not send {self.last!r}"

    def messages(self) -> list[tuple[str, dict]]:
        """(event name, data) of each message so far."""
        found, name = [], None
        for line in list(self.lines):
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                found.append((name, json.loads(line.partition(":")[2])))
        return found
