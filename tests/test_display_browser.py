"""The display pages in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Each test runs a real Hall (engine, SQLite store, bus) and the daemon's aiohttp app with the
display mounted, on 127.0.0.1. Where the issue says "press NEXT on a keypad", the tests
submit the keypad's command (CallNext, Recall, Transfer, NoShow) to the hall: the serial
drivers are another module's, and they end in exactly these commands.

One browser for the whole module (the machine has two shared cores); each test opens its
own context. Screenshots go to $DISPLAY_SCREENSHOTS, default state/screenshots/ (ignored by
git).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from hall_daemon import commands as c
from hall_daemon.config import KioskConfig, OpeningHours
from tests.display_harness import CONFIG, SHOTS, T0, HallServer, open_page, tok

pytestmark = [pytest.mark.service, pytest.mark.asyncio(loop_scope="module")]
pytest_plugins = ["tests.display_harness"]  # the browser and server fixtures

# --- the big screens ----------------------------------------------------------------------------


async def test_screens_follow_calls_live_in_both_layouts(
    browser: Browser, server: HallServer
) -> None:
    await server.do(
        *(c.TakeTicket(T0 + timedelta(seconds=i), "A", tok()) for i in range(4)),
        *(c.TakeTicket(T0 + timedelta(seconds=10 + i), "B", tok()) for i in range(2)),
        c.OpenCounter(T0, 1),
        c.OpenCounter(T0, 2),
        c.OpenCounter(T0, 3),
    )
    hall_page, hall_watch = await open_page(
        browser, f"{server.url}/screen/hall", server.url, width=1920, height=1080
    )
    portrait, portrait_watch = await open_page(
        browser, f"{server.url}/screen/area-a", server.url, width=1080, height=1920
    )
    for page in (hall_page, portrait):
        await expect(page.locator("body")).to_have_attribute("data-conn", "online")

    # Opened mid-day: the full state at once.
    row_a = hall_page.locator('#queues tr[data-service="A"]')
    await expect(row_a).to_have_attribute("data-waiting", "4")
    await expect(hall_page.locator('#queues tr[data-service="B"]')).to_have_attribute(
        "data-waiting", "2"
    )
    wait_before = await row_a.get_attribute("data-wait")
    # The portrait screen of area A shows service A only, and the counters that serve it.
    await expect(portrait.locator("#queues tr")).to_have_count(1)
    await expect(portrait.locator("#counters .counter")).to_have_count(4)

    # NEXT at counter 1: the call appears live, large and flashing, on both screens.
    seq_before = await hall_page.locator("body").get_attribute("data-seq")
    await server.do(c.CallNext(T0, 1))
    now = hall_page.locator("#now")
    for page in (hall_page, portrait):
        await expect(page.locator("#now")).to_have_attribute("data-number", "A001")
        await expect(page.locator("#now")).to_have_class("now flash")
        await expect(page.locator("#now-counter .zh")).to_have_text("1号窗口")
    await expect(now).to_have_attribute("data-flashes", "1")
    await expect(hall_page.locator('#counters .counter[data-counter="1"] .cticket')).to_have_text(
        "A001"
    )
    await expect(row_a).to_have_attribute("data-waiting", "3")
    assert await row_a.get_attribute("data-wait") != wait_before  # the forecast moved too
    assert await hall_page.locator("body").get_attribute("data-seq") != seq_before

    # RECALL: the same call flashes again.
    await server.do(c.Recall(T0, 1))
    await expect(now).to_have_attribute("data-flashes", "2")
    await expect(now).to_have_attribute("data-recall", "1")
    await expect(now).to_have_class("now flash")

    # Counter 2 calls A002; the older call moves to the recent list.
    await server.do(c.CallNext(T0, 2))
    await expect(now).to_have_attribute("data-number", "A002")
    await expect(hall_page.locator('#recent li[data-number="A001"]')).to_have_count(1)

    # NO-SHOW at counter 2: marked missed, and the counter is free.
    await server.do(c.NoShow(T0, 2))
    await expect(now).to_have_attribute("data-status", "no_show")
    await expect(now.locator("#now-status .zh")).to_have_text("过号")
    await expect(hall_page.locator('#counters .counter[data-counter="2"]')).to_have_attribute(
        "data-ticket", ""
    )

    # TRANSFER A001 from counter 1 to service B: off the counter and the call lists, and it
    # queues for B (at its original issue time: 一票到底).
    b_row = hall_page.locator('#queues tr[data-service="B"]')
    await server.do(c.Transfer(T0, 1, "B"))
    await expect(b_row).to_have_attribute("data-waiting", "3")
    await expect(hall_page.locator('#counters .counter[data-counter="1"]')).to_have_attribute(
        "data-ticket", ""
    )
    await expect(hall_page.locator('#recent li[data-number="A001"]')).to_have_count(0)
    # Counter 3 prefers B: it now calls A001, which waited longest there.
    await server.do(c.CallNext(T0, 3))
    await expect(now).to_have_attribute("data-number", "A001")
    await expect(now).to_have_attribute("data-counter", "3")
    await expect(b_row).to_have_attribute("data-waiting", "2")
    # The area-A screen does not show B's calls: it still shows A002 (missed).
    await expect(portrait.locator("#now")).to_have_attribute("data-number", "A002")

    # The notice scrolls on every screen, and the admin can change it live.
    assert server.display is not None
    await expect(hall_page.locator("#notice-text")).to_have_class("notice-text scrolling")
    server.display.set_notice("今日下午14:00起暂停办理公积金业务。")
    await expect(portrait.locator("#notice-text")).to_have_text(
        "今日下午14:00起暂停办理公积金业务。"
    )

    # Both layouts, with Chinese text, for a person to look at; the DOM holds the text.
    await server.do(c.CallNext(T0, 2))  # a fresh flash for the pictures
    await expect(now).to_have_attribute("data-number", "A003")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await hall_page.screenshot(path=SHOTS / "screen-hall-landscape.png")
    await portrait.screenshot(path=SHOTS / "screen-area-a-portrait.png")
    hall_text = await hall_page.locator("body").text_content() or ""
    for text in (
        "示范区政务服务中心",
        "叫号信息",
        "企业开办",
        "不动产登记",
        "社保医保",
        "2号窗口",
        "最近叫号",
        "等候情况",
        "A003",
        "Business registration",
    ):
        assert text in hall_text, text
    portrait_text = await portrait.locator("main.data").text_content() or ""
    assert "企业开办" in portrait_text and "不动产登记" not in portrait_text
    # Public pages: no token of any ticket, anywhere in them.
    assert server.hall is not None
    html = await hall_page.content() + await portrait.content()
    assert not any(t in html for t in server.hall.state.by_token)

    hall_watch.check()
    portrait_watch.check()
    await hall_page.context.close()
    await portrait.context.close()


async def test_daemon_restart_shows_reconnecting_then_the_right_state(
    browser: Browser, server: HallServer
) -> None:
    await server.do(
        *(c.TakeTicket(T0 + timedelta(seconds=i), "C", tok()) for i in range(3)),
        c.CallNext(T0, 5),
    )
    page, watch = await open_page(
        browser, f"{server.url}/screen/hall", server.url, width=1920, height=1080
    )
    body = page.locator("body")
    await expect(body).to_have_attribute("data-conn", "online")
    await expect(page.locator("#now")).to_have_attribute("data-number", "C001")
    await expect(page.locator('#queues tr[data-service="C"]')).to_have_attribute(
        "data-waiting", "2"
    )

    await server.stop()
    await expect(body).to_have_attribute("data-conn", "reconnecting")
    await expect(page.locator(".conn-banner .reconnecting")).to_be_visible()
    await expect(page.locator("main.data")).to_be_hidden()  # no stale numbers on show

    # The daemon comes back, and the hall moved on while the page was away.
    await server.start_hall()
    await server.do(c.CallNext(T0, 6), c.TakeTicket(T0 + timedelta(seconds=10), "C", tok()))
    await server.start_web()
    await expect(body).to_have_attribute("data-conn", "online", timeout=10000)
    await expect(page.locator("main.data")).to_be_visible()
    await expect(page.locator("#now")).to_have_attribute("data-number", "C002")
    await expect(page.locator("#now")).to_have_attribute("data-counter", "6")
    await expect(page.locator('#queues tr[data-service="C"]')).to_have_attribute(
        "data-waiting", "2"
    )
    await expect(page.locator('#counters .counter[data-counter="5"] .cticket')).to_have_text("C001")
    # And it is live again.
    await server.do(c.CallNext(T0, 5))
    await expect(page.locator("#now")).to_have_attribute("data-number", "C003")
    watch.check()
    await page.context.close()


# --- the kiosk ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def kiosk_server(tmp_path: Path) -> AsyncIterator[HallServer]:
    """A hall whose service C has closed for the day (its button must be greyed out)."""
    services = list(CONFIG.services)
    services[2] = services[2].model_copy(
        update={"hours": (OpeningHours.model_validate({"open": "08:00", "close": "09:00"}),)}
    )
    s = HallServer(
        tmp_path / "hall.db", config=CONFIG.model_copy(update={"services": tuple(services)})
    )
    await s.start_hall()
    await s.start_web()
    yield s
    await s.stop()


async def test_kiosk_issues_tickets_checks_in_codes_and_resets(
    browser: Browser, kiosk_server: HallServer
) -> None:
    server = kiosk_server
    assert server.hall is not None
    await server.do(c.TakeTicket(T0, "A", tok()))  # someone is already waiting for A
    page, watch = await open_page(
        browser,
        f"{server.url}/kiosk?kiosk=k1",
        server.url,
        width=1280,
        height=1024,
        has_touch=True,
    )
    await expect(page.locator("body")).to_have_attribute("data-conn", "online")
    a = page.locator('#services .service[data-service="A"]')
    await expect(a).to_be_enabled()
    await expect(page.locator('#services .service[data-service="C"]')).to_be_disabled()
    await expect(page.locator('#services .service[data-service="C"] .sinfo .zh')).to_have_text(
        "未到办理时间"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / "kiosk-home.png")

    # Tap a service: a ticket through the same TakeTicket command as a serial dispenser.
    await a.tap()
    result = page.locator("#result")
    await expect(result).to_be_visible()
    await expect(page.locator("#result-number")).to_have_text("A002")
    await expect(page.locator("#result-ahead .zh")).to_have_text("前面还有 1 人")
    await expect(page.locator("#result-wait .zh")).to_contain_text("预计等候")
    await expect(page.locator("#result-receipt")).to_have_attribute("data-state", "printed")
    await page.screenshot(path=SHOTS / "kiosk-ticket.png")
    t = server.hall.state.tickets["A002"]
    assert (t.channel, t.priority, t.state) == ("dispenser", False, "waiting")
    # The receipt hook got the ticket, with the applicant page's QR URL and its token.
    [receipt] = server.printer.receipts
    assert receipt.number == "A002" and receipt.kiosk == "k1" and receipt.ahead == 1
    assert receipt.qr_url == CONFIG.receipt_qr_url().replace("{token}", t.token)
    # The token is on the receipt only, never on the kiosk's screen.
    assert t.token not in await page.content()

    await page.locator("#done").tap()
    await expect(result).to_be_hidden()

    # Priority, then a service.
    await page.locator("#priority").tap()
    await expect(page.locator("#priority")).to_have_attribute("aria-pressed", "true")
    await page.locator('#services .service[data-service="B"]').tap()
    await expect(page.locator("#result-number")).to_have_text("B001")
    assert server.hall.state.tickets["B001"].priority is True
    await page.locator("#done").tap()
    await expect(page.locator("#priority")).to_have_attribute("aria-pressed", "false")

    # A keyboard-wedge scanner types the appointment code and Enter into the focused field.
    await server.do(c.UpsertAppointment(T0, "YY20261127-0042", "B", T0, T0 + timedelta(minutes=30)))
    await expect(page.locator("#code")).to_be_focused()
    await page.keyboard.type("YY20261127-0042\n", delay=5)
    await expect(page.locator("#result-number")).to_have_text("B002")
    appt = server.hall.state.appointments["YY20261127-0042"]
    assert appt.ticket == "B002"
    # A checked-in appointment is called first, after the earlier priority ticket B001.
    await expect(page.locator("#result-ahead .zh")).to_have_text("前面还有 1 人")
    await page.locator("#done").tap()

    # The same code again: refused with a clear message, no second ticket. An unknown code
    # gets the very same answer, so that a miss tells a guesser nothing.
    issued = len(server.hall.state.tickets)
    for code in ("YY20261127-0042", "NO-SUCH-CODE"):
        await page.keyboard.type(f"{code}\n", delay=5)
        await expect(page.locator("#error")).to_have_attribute("data-slug", "no-appointment-now")
        await expect(page.locator("#error .zh")).to_have_text(
            "该预约码现在不能签到：请在临近预约时间时签到，或到窗口咨询"
        )
    assert len(server.hall.state.tickets) == issued
    # A remote ticket's QR (the app's /t/<token> link) shows that ticket; nothing new issued.
    remote = tok()
    await server.do(c.TakeTicket(T0, "A", remote, channel="remote"))
    issued = len(server.hall.state.tickets)
    await page.keyboard.type(f"{CONFIG.web.base_url()}/t/{remote}\n", delay=2)
    await expect(page.locator("#result-number")).to_have_text("A003")
    await expect(page.locator("#result")).to_have_attribute("data-existing", "1")
    assert len(server.hall.state.tickets) == issued

    # Live: the buttons follow the queues.
    await page.locator("#done").tap()
    await expect(page.locator('#services .service[data-service="A"] .sinfo .zh')).to_contain_text(
        "等候 3 人"
    )
    await server.do(c.CallNext(T0, 1))
    await expect(page.locator('#services .service[data-service="A"] .sinfo .zh')).to_contain_text(
        "等候 2 人"
    )
    watch.check()
    await page.context.close()

    # Left alone after showing a ticket, a kiosk resets (15 s by default; 2 s here).
    page, watch = await open_page(
        browser,
        f"{server.url}/kiosk?kiosk=k1&idle=2",
        server.url,
        width=1280,
        height=1024,
        has_touch=True,
    )
    await expect(page.locator("body")).to_have_attribute("data-conn", "online")
    await page.locator("#priority").tap()
    await page.locator('#services .service[data-service="A"]').tap()
    await expect(page.locator("body")).to_have_attribute("data-resets", "1", timeout=8000)
    await expect(page.locator("#home")).to_be_visible()
    await expect(page.locator("#priority")).to_have_attribute("aria-pressed", "false")
    assert server.hall.state.tickets["A004"].priority is True  # issued before the reset
    watch.check()
    await page.context.close()


async def test_a_kiosk_known_by_its_key_keeps_it_and_another_machine_is_told(
    browser: Browser, tmp_path: Path
) -> None:
    key = "lobby-kiosk-key-" + tok()
    key_file = tmp_path / "lobby.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    lobby = KioskConfig(id="lobby", key_file=key_file)
    server = HallServer(tmp_path / "hall.db", config=CONFIG.model_copy(update={"kiosks": (lobby,)}))
    await server.start_hall()
    await server.start_web()
    try:
        # Not a kiosk (this PC is none once the hall lists its kiosks): a clear message.
        page, watch = await open_page(
            browser, f"{server.url}/kiosk", server.url, width=1280, height=1024, has_touch=True
        )
        await expect(page.locator("body")).to_have_attribute("data-conn", "online")
        await page.locator('#services .service[data-service="A"]').tap()
        await expect(page.locator("#error")).to_have_attribute("data-slug", "not-a-kiosk")
        await expect(page.locator("#error .zh")).to_have_text("本机未登记为取号机，请联系工作人员")
        watch.check()
        await page.context.close()

        # The lobby kiosk's browser is opened once with its key, which then leaves the URL.
        page, watch = await open_page(
            browser,
            f"{server.url}/kiosk?kiosk=lobby&key={key}",
            server.url,
            width=1280,
            height=1024,
            has_touch=True,
        )
        await expect(page.locator("body")).to_have_attribute("data-conn", "online")
        assert key not in page.url and page.url.endswith("/kiosk?kiosk=lobby")
        await page.locator('#services .service[data-service="A"]').tap()
        await expect(page.locator("#result-number")).to_have_text("A001")
        await page.reload()  # kept in the browser: a restart of the kiosk needs no key
        await expect(page.locator("body")).to_have_attribute("data-conn", "online")
        await page.locator('#services .service[data-service="B"]').tap()
        await expect(page.locator("#result-number")).to_have_text("B001")
        watch.check()
        await page.context.close()
    finally:
        await server.stop()


# --- the applicant's page -----------------------------------------------------------------------


async def test_applicant_page_follows_its_ticket_and_a_wrong_token_shows_nothing(
    browser: Browser, server: HallServer
) -> None:
    mine, other = tok(), tok()
    await server.do(
        c.TakeTicket(T0, "A", other),
        c.TakeTicket(T0 + timedelta(seconds=1), "A", tok()),
        c.TakeTicket(T0 + timedelta(seconds=2), "A", mine),
    )
    phone = {"width": 390, "height": 844}
    page, watch = await open_page(
        browser,
        f"{server.url}/t/{mine}",
        server.url,
        **phone,
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    ticket = page.locator("#ticket")
    await expect(page.locator("body")).to_have_attribute("data-conn", "online")
    await expect(page.locator("#number")).to_have_text("A003")
    await expect(ticket).to_have_attribute("data-state", "waiting")
    await expect(page.locator("#ahead")).to_have_attribute("data-ahead", "2")
    await expect(page.locator("#wait .zh")).to_contain_text("分钟")
    await expect(page.locator("#service .zh")).to_have_text("企业开办")
    await expect(page.locator("#service .en")).to_have_text("Business registration")
    wait_before = await page.locator("#wait").text_content()

    await server.do(c.CallNext(T0, 1))
    await expect(page.locator("#ahead")).to_have_attribute("data-ahead", "1")
    assert await page.locator("#wait").text_content() != wait_before
    await server.do(c.CallNext(T0, 2))
    await expect(page.locator("#ahead")).to_have_attribute("data-ahead", "0")
    await server.do(c.CallNext(T0, 1))  # counter 1 finishes A001 and calls A003
    await expect(ticket).to_have_attribute("data-state", "called")
    await expect(page.locator("#call")).to_be_visible()
    await expect(page.locator("#call .zh")).to_have_text("请到 1号窗口")
    await expect(page.locator("#call .en")).to_have_text("Please go to Counter 1")
    await expect(page.locator("#ahead-row")).to_be_hidden()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / "ticket-called.png")
    # Nothing of the other tickets: not their numbers, not their tokens.
    html = await page.content()
    assert "A001" not in html and "A002" not in html and other not in html
    await server.do(c.Done(T0, 1))
    await expect(ticket).to_have_attribute("data-state", "done")
    watch.check()

    # A wrong token: a clear page, 404, and nothing of any ticket.
    for wrong in (tok(), "A003", mine[:-1], "%3Cscript%3E"):
        response = await page.goto(f"{server.url}/t/{wrong}")
        assert response is not None and response.status == 404
        text = await page.locator("body").text_content() or ""
        assert "未找到" in text and "Not found" in text
        html = await page.content()
        assert not any(n in html for n in ("A001", "A002", "A003"))
    await page.screenshot(path=SHOTS / "ticket-not-found.png")
    # Its feed says "gone" and nothing else.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.url}/ws/t/{tok()}") as ws,
    ):
        assert await ws.receive_json(timeout=5) == {"t": "gone"}
    await page.context.close()
