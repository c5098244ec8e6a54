"""Headless Chromium for the browser tests and benchmarks: Debian's own build (installed by
scripts/setup.sh), driven by Playwright without its browser download."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = (
    "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",  # no calls home: the pages must load nothing external
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


@asynccontextmanager
async def chromium(*extra: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra])
        try:
            yield browser
        finally:
            await browser.close()


class PageWatch:
    """Fails the test on a page's script error (and, if asked, a console error) or on any
    request that leaves the daemon."""

    def __init__(self, page: Page, *allowed: str, console_errors: bool = False) -> None:
        self.errors: list[str] = []
        self.foreign: list[str] = []
        ok = (*allowed, "data:")
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        if console_errors:
            page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: None if r.url.startswith(ok) else self.foreign.append(r.url))

    def check(self) -> None:
        assert self.errors == [], self.errors
        assert self.foreign == [], f"pages must load nothing from outside: {self.foreign}"
