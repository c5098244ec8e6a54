"""The scrolling notice (信息公示) set through the hall, on open pages in headless Chromium.

An admin's `SetNotice` is an engine command: it is logged as `hall.notice_set`, reaches the
screens over the bus without a reload, and is part of the hall's state, so a restarted
daemon shows it again. An empty notice falls back to config.yaml's `hall.notice`.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from hall_daemon import commands as c
from hall_daemon.model import DomainError
from tests.display_harness import CONFIG, SHOTS, T0, HallServer, open_page

pytestmark = [pytest.mark.service, pytest.mark.asyncio(loop_scope="module")]
pytest_plugins = ["tests.display_harness"]  # the browser and server fixtures

NOTICE = "今日下午14:00起暂停办理公积金业务，请前往社保医保窗口咨询。Housing fund: closed at 14:00."


async def same_document(page: Page) -> bool:
    """True while the page is the one the test marked: it was never reloaded."""
    return bool(await page.evaluate("window.__notReloaded === true"))


async def test_set_notice_reaches_open_pages_and_survives_a_restart(
    browser: Browser, server: HallServer
) -> None:
    assert CONFIG.hall.notice and CONFIG.hall.notice != NOTICE
    screen, screen_watch = await open_page(
        browser, f"{server.url}/screen/hall", server.url, width=1920, height=1080
    )
    kiosk, kiosk_watch = await open_page(
        browser, f"{server.url}/kiosk", server.url, width=1280, height=1024
    )
    for page in (screen, kiosk):
        await expect(page.locator("body")).to_have_attribute("data-conn", "online")
        await expect(page.locator("#notice-text")).to_have_text(CONFIG.hall.notice)
        await page.evaluate("window.__notReloaded = true")

    # The admin sets a notice: every open page shows it, scrolling, without a reload.
    await server.do(c.SetNotice(T0, NOTICE))
    for page in (screen, kiosk):
        await expect(page.locator("#notice-text")).to_have_text(NOTICE)
        await expect(page.locator("#notice")).to_be_visible()
        assert await same_document(page)
    await expect(screen.locator("#notice-text")).to_have_class("notice-text scrolling")

    # The daemon restarts: the page reconnects and the admin's notice is still the one shown.
    await server.stop()
    await expect(screen.locator("body")).to_have_attribute("data-conn", "reconnecting")
    await server.start_hall()
    await server.start_web()
    await expect(screen.locator("body")).to_have_attribute("data-conn", "online", timeout=10000)
    await expect(screen.locator("#notice-text")).to_have_text(NOTICE)
    assert await same_document(screen)
    # And a screen switched on after the restart gets it in its first message.
    fresh, fresh_watch = await open_page(
        browser, f"{server.url}/screen/area-a", server.url, width=1080, height=1920
    )
    await expect(fresh.locator("body")).to_have_attribute("data-conn", "online")
    await expect(fresh.locator("#notice-text")).to_have_text(NOTICE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    await screen.screenshot(path=SHOTS / "screen-hall-notice-after-restart.png")

    # Too long a notice is refused with a clear answer, and the one shown stays.
    with pytest.raises(DomainError) as refused:
        await server.do(c.SetNotice(T0, "长" * 501))
    assert refused.value.slug == "notice-too-long"
    await server.do(c.SetNotice(T0, NOTICE + " "))  # the same text once tidied: no event
    await expect(fresh.locator("#notice-text")).to_have_text(NOTICE)

    # Cleared by the admin: back to config.yaml's notice, live.
    await server.do(c.SetNotice(T0, ""))
    for page in (screen, fresh):
        await expect(page.locator("#notice-text")).to_have_text(CONFIG.hall.notice)
    assert await same_document(screen)

    screen_watch.check()
    kiosk_watch.check()
    fresh_watch.check()
    for page in (screen, kiosk, fresh):
        await page.context.close()
