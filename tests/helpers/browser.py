"""Headless Chromium for the dashboard's browser tests and screenshots: Debian's own build
(`chromium-headless-shell`, or `chromium`), driven by Playwright without its browser download.
The `browser` fixture skips, saying what to install, where either is missing."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

# No import of tests.helpers.live (the server) here: every pytest process loads this plugin.

# Debian's builds, in the order tried; the Makefile's APT_PACKAGES installs the first.
CHROMIUM = ("chromium-headless-shell", "chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
WAIT_MS = 20_000  # for what the page shows after the server stored it (1 s flushes, 2 s polls)
APP_JS = Path(__file__).parents[2] / "server" / "dashboard" / "app.js"


def chromium_path() -> str | None:
    return next((p for name in CHROMIUM if (p := shutil.which(name))), None)


def every_ms(name: str) -> int:
    """One of the page's poll periods, as server/dashboard/app.js sets it: a test that installs
    Playwright's clock in the page runs the page's timers that far instead of waiting for them."""
    return int(re.search(rf"^const {name} = (\d+);", APP_JS.read_text(), re.M).group(1))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip: playwright (dev extra)")
    path = chromium_path()
    if path is None:
        pytest.skip(f"no Chromium: apt-get install {CHROMIUM[0]} (make setup does, as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        yield browser
        browser.close()


@dataclasses.dataclass
class Tab:
    """A page, what it logged as errors (CSP refusals, script failures) and what it asked."""

    page: Any
    errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[Any] = dataclasses.field(default_factory=list)

    def console(self, message: Any) -> None:
        # the browser's own line for each 4xx answer (a refused token) is expected
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)


@pytest.fixture
def tab(browser):
    """A fresh page in its own context; closed before a module's server stops, so its live
    feed ends first."""
    context = browser.new_context()
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.page.on("console", lambda m: tab.console(m))
    tab.page.on("request", lambda r: tab.requests.append(r))
    yield tab
    context.close()


def sign_in(page: Any, url: str, token: str | None = None) -> None:
    """Open the dashboard at `url` and submit `token` (default: the tests' token) in its
    sign-in dialog."""
    from playwright.sync_api import expect

    from tests.helpers.live import TOKEN

    token = TOKEN if token is None else token

    page.goto(url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
