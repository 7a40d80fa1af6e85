"""Headless Chromium for the dashboard tests: Debian's own build (`chromium-headless-shell`, or
`chromium`), driven by Playwright without its browser download."""

import shutil

import pytest

# Debian's builds, in the order tried; the Makefile's APT_PACKAGES installs the first.
CHROMIUM = ("chromium-headless-shell", "chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def chromium_path() -> str | None:
    return next((p for name in CHROMIUM if (p := shutil.which(name))), None)


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
