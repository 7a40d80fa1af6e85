"""Screenshots of the dashboard with real detections, for docs/dashboard.md.

    .venv/bin/python bench/dashboard_screenshots.py                # models/default, the demo
    .venv/bin/python bench/dashboard_screenshots.py --events 6 --out /tmp/shots

What it does:

1. Starts `gd-serve --model MODEL --demo` (what `make run` starts) on a free loopback port with
   a temporary token and a temporary event store, and waits for `/readyz`.
2. Waits until the demo stream's scenes have given `--events` ended events (real time: a
   scene is 30-40 s with 6 actions).
3. Opens the dashboard in headless Chromium (Debian's `chromium-headless-shell`, driven by
   Playwright, as the dashboard tests do), signs in, waits for the demo camera's tile and
   chart, and writes the whole page to `OUT/dashboard.png`: the alert queue, the tile, the
   history.
4. Acknowledges the newest alert with its button, waits for the history to show it, and writes
   `OUT/dashboard-acknowledged.png`.

Both files are written atomically; the server and the browser are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streams import free_port  # noqa: E402
from core.files import atomic_write_bytes  # noqa: E402
from tests.helpers.browser import ARGS, CHROMIUM, chromium_path, sign_in  # noqa: E402

CAMERA = "demo"  # server/demo.py's camera id
VIEWPORT = {"width": 1280, "height": 900}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Screenshots of the gd-serve dashboard during its demo stream "
        "(docs/dashboard.md): OUT/dashboard.png and OUT/dashboard-acknowledged.png."
    )
    p.add_argument("--model", type=Path, default=ROOT / "models/default", help="model bundle")
    p.add_argument("--out", type=Path, default=ROOT / "docs/images", help="where the PNGs go")
    p.add_argument(
        "--events", type=int, default=4, help="ended events to wait for before the first shot"
    )
    p.add_argument("--points", type=int, default=15, help="chart points to wait for")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="longest wait for each step, seconds"
    )
    return p.parse_args(argv)


@contextmanager
def demo_server(model: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    """`gd-serve --demo` on a free loopback port; yields (URL, token) once ready."""
    token = secrets.token_hex(16)
    tokens = workdir / "tokens.txt"
    tokens.write_text(token + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "server.cli", "--model", str(model), "--demo",
        "--port", str(port), "--tokens-file", str(tokens), "--data-dir", str(workdir / "data"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GD_LOG_LEVEL": "warning"}
    with (workdir / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("the server", lambda: ready(url), 120, proc)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(what: str, condition, timeout_s: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            sys.exit(f"gd-serve exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(1.0)


def ended_events(url: str, token: str) -> int:
    r = httpx.get(
        f"{url}/v1/events",
        params={"camera": CAMERA, "state": "ended", "limit": 100},
        headers={"Authorization": f"Bearer {token}"},
    )
    r.raise_for_status()
    return len(r.json()["events"])


def charted(tile, points: int) -> bool:
    """The demo camera's tile is online and its chart has `points` points."""
    online = tile.get_attribute("data-online") == "true"
    return online and int(tile.get_attribute("data-points") or 0) >= points


def shoot(page, path: Path) -> None:
    atomic_write_bytes(path, page.screenshot(full_page=True, type="png"))
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_path()
    if chromium is None:
        sys.exit(f"no Chromium: apt-get install {CHROMIUM[0]} (make setup does, as root)")
    wait_ms = 60_000
    with tempfile.TemporaryDirectory() as tmp, demo_server(args.model, Path(tmp)) as (url, token):
        print(f"gd-serve --demo on {url}; waiting for {args.events} ended events", flush=True)
        wait_for("the demo's events", lambda: ended_events(url, token) >= args.events, args.timeout)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            print("signing in", flush=True)
            sign_in(page, url, token)
            expect(page.locator("#feed-status")).to_have_text("feed: live", timeout=wait_ms)
            tile = page.locator(f'.tile[data-camera="{CAMERA}"]')
            expect(tile.locator("canvas")).to_have_count(1, timeout=wait_ms)
            # the chart gains a point about once a second while the camera streams; between
            # scenes the demo renders the next one (offline for a while): shoot while online
            print(f"waiting for {args.points} chart points, the camera online", flush=True)
            wait_for("the chart", lambda: charted(tile, args.points), args.timeout)
            first = page.locator("#alerts li.alert").first
            expect(first).to_be_visible(timeout=wait_ms)
            shoot(page, args.out / "dashboard.png")

            print("acknowledging the newest alert", flush=True)
            # by its id: `first` is looked up again on each use, and new alerts go on top
            event_id = first.get_attribute("data-event")
            alert = page.locator(f'#alerts li.alert[data-event="{event_id}"]')
            alert.get_by_role("button", name="acknowledge").click()
            expect(alert).to_have_count(0, timeout=wait_ms)
            review = page.locator(f'#history tr[data-event="{event_id}"] .review')
            expect(review).to_have_text("acknowledged", timeout=wait_ms)
            shoot(page, args.out / "dashboard-acknowledged.png")
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
