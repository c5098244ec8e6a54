"""What the display pages may show, computed from the engine's state: pure, no I/O."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from display.feed import MAX_PENDING, Client
from display.server import STATIC, TEMPLATES, _token_in
from display.views import (
    CallLog,
    diff_view,
    kiosk_entry,
    kiosk_view,
    screen_meta,
    screen_scope,
    screen_view,
    ticket_view,
)
from hall_daemon import commands as c
from hall_daemon.config import OpeningHours, load_config
from hall_daemon.engine import DAY_STARTED, Engine
from hall_daemon.events import TICKET_CALLED, TICKET_RECALLED, Event
from hall_daemon.forecast import queue_length_forecast

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "config.yaml")
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=TZ)
SCREENS = {s.id: s for s in CONFIG.screens}


class Hall:
    """The engine, with the display's call log following its events as the hub does."""

    def __init__(self, config: Any = CONFIG) -> None:
        self.engine = Engine(config.to_spec())
        self.log = CallLog()
        self.n = 0
        self.run(c.Tick(T0))

    def run(self, *commands: c.Command) -> list[Event]:
        out: list[Event] = []
        for cmd in commands:
            for e in self.engine.execute(cmd):
                if e.type == TICKET_CALLED:
                    self.log.called(e.data["number"], e.data["service"], e.data["counter"], e.at)
                elif e.type == TICKET_RECALLED:
                    self.log.recalled(e.data["number"])
                elif e.type == DAY_STARTED:
                    self.log.rebuild(self.engine.state)
                out.append(e)
        return out

    def now(self) -> datetime:
        """A later time at each call, as a real hall's commands have."""
        self.n += 1
        return T0 + timedelta(seconds=self.n)

    def take(self, service: str, at: datetime = T0, **kw: Any) -> str:
        self.n += 1
        token = f"secret-token-{self.n:04d}-xxxxxxxx"
        self.run(c.TakeTicket(at + timedelta(seconds=self.n), service, token, **kw))
        return token

    def calls(self) -> list[tuple[str, int, str]]:
        return [(r.number, r.counter, t.state) for r, t in self.log.entries(self.engine.state)]


def test_recent_calls_follow_calls_transfers_no_shows_and_a_rebuild_agrees() -> None:
    h = Hall()
    for _ in range(4):
        h.take("A")
    h.take("B")
    h.run(c.CallNext(h.now(), 1), c.CallNext(h.now(), 2), c.CallNext(h.now(), 3))
    assert h.calls() == [("B001", 3, "called"), ("A002", 2, "called"), ("A001", 1, "called")]
    h.run(c.NoShow(h.now(), 2), c.Transfer(h.now(), 1, "C"), c.Serving(h.now(), 3))
    # A001 went back to waiting (for C): it is no longer a call that stands.
    assert h.calls() == [("B001", 3, "serving"), ("A002", 2, "no_show")]
    h.run(c.CallNext(h.now(), 5))  # counter 5 (C only) calls the transferred A001
    h.run(c.CallNext(h.now(), 2), c.Suspend(h.now(), 2))
    assert h.calls()[:2] == [("A003", 2, "suspended"), ("A001", 5, "called")]
    h.run(c.Resume(h.now(), 2))  # A003 called again, at the same counter
    assert h.calls()[0] == ("A003", 2, "called")

    rebuilt = CallLog()
    rebuilt.rebuild(h.engine.state)
    assert [(r.number, r.counter) for r, _ in rebuilt.entries(h.engine.state)] == [
        (n, k) for n, k, _ in h.calls()
    ]


def test_a_recall_moves_the_call_to_the_top() -> None:
    h = Hall()
    h.take("A")
    h.take("A")
    h.run(c.CallNext(T0, 1), c.CallNext(T0, 2))
    assert [n for n, _, _ in h.calls()] == ["A002", "A001"]
    h.run(c.Recall(T0, 1))
    assert [n for n, _, _ in h.calls()] == ["A001", "A002"]


def test_yesterdays_a001_is_not_taken_for_todays() -> None:
    h = Hall()
    h.take("A")
    h.run(c.CallNext(T0, 1))
    log = h.log  # a log that missed the new day's rebuild must still not be fooled
    tomorrow = T0 + timedelta(days=1)
    h.run(c.Tick(tomorrow))
    h.take("A", at=tomorrow)  # A001 again, waiting
    assert list(log.entries(h.engine.state)) == []
    h.log = CallLog()
    h.log.called("A001", "A", 1, T0)  # the stale record
    h.run(c.CallNext(tomorrow, 2))
    assert h.calls() == [("A001", 2, "called")]


def test_a_screen_shows_its_services_and_the_counters_that_serve_them() -> None:
    scope = screen_scope(CONFIG, SCREENS["area-a"])
    assert scope.services == ("A",)
    assert scope.counters == (1, 2, 3, 6)
    everything = screen_scope(CONFIG, SCREENS["hall"])
    assert everything.services == ("A", "B", "C")
    assert everything.counters == (1, 2, 3, 4, 5, 6)
    meta = screen_meta(CONFIG, SCREENS["area-a"], scope)
    assert [s["name"] for s in meta["services"]] == ["企业开办"]
    assert meta["hall"]["name"] == "示范区政务服务中心"


def test_screen_view_filters_calls_and_keeps_n_plus_the_banner() -> None:
    h = Hall()
    for _ in range(8):
        h.take("A")
    h.take("B")
    h.run(c.CallNext(T0, 4))  # B001 at counter 4: not for the area-A screen
    for _ in range(6):
        h.run(c.CallNext(T0, 1))
    area = screen_view(
        h.engine.state,
        screen_scope(CONFIG, SCREENS["area-a"]),
        queue_length_forecast,
        h.log,
        T0,
    )
    assert [x["number"] for x in area["calls"]] == ["A006", "A005", "A004", "A003", "A002"]
    assert area["calls"][0] == {"number": "A006", "service": "A", "counter": 1, "status": "called"}
    assert area["calls"][1]["status"] == "done"
    assert set(area["queues"]) == {"A"} and area["queues"]["A"]["waiting"] == 2
    assert area["counters"]["1"] == {"state": "open", "ticket": "A006", "status": "called"}
    hall = screen_view(
        h.engine.state, screen_scope(CONFIG, SCREENS["hall"]), queue_length_forecast, h.log, T0
    )
    assert len(hall["calls"]) == 7  # the banner and the 6 recent calls of config.yaml
    assert "B001" in [x["number"] for x in hall["calls"]]


def test_public_views_carry_no_token() -> None:
    h = Hall()
    tokens = [h.take(s) for s in "ABCABC"]
    h.run(c.CallNext(T0, 1), c.CallNext(T0, 4), c.Recall(T0, 1))
    state = h.engine.state
    shown = [
        kiosk_view(state, queue_length_forecast, T0),
        *(
            screen_view(state, screen_scope(CONFIG, s), queue_length_forecast, h.log, T0)
            for s in CONFIG.screens
        ),
        *(screen_meta(CONFIG, s, screen_scope(CONFIG, s)) for s in CONFIG.screens),
    ]
    text = json.dumps(shown, ensure_ascii=False)
    assert not any(t in text for t in tokens)
    assert "token" not in text


def test_kiosk_greys_out_a_closed_or_full_service() -> None:
    services = list(CONFIG.services)
    services[0] = services[0].model_copy(update={"daily_limit": 1})
    services[2] = services[2].model_copy(
        update={"hours": (OpeningHours.model_validate({"open": "13:00", "close": "17:00"}),)}
    )
    h = Hall(CONFIG.model_copy(update={"services": tuple(services)}))
    state = h.engine.state
    assert kiosk_entry(state, queue_length_forecast, "A", T0)["available"] is True
    h.take("A")
    a = kiosk_entry(state, queue_length_forecast, "A", T0)
    assert (a["available"], a["reason"], a["waiting"]) == (False, "full", 1)
    assert kiosk_entry(state, queue_length_forecast, "C", T0)["reason"] == "closed"
    afternoon = T0.replace(hour=14)
    assert kiosk_entry(state, queue_length_forecast, "C", afternoon)["available"] is True
    assert kiosk_entry(state, queue_length_forecast, "B", T0)["available"] is True


def test_a_ticket_view_tells_its_holder_where_it_stands_and_nothing_else() -> None:
    h = Hall()
    first = h.take("A")
    mine = h.take("A")
    state = h.engine.state
    v = ticket_view(state, CONFIG, queue_length_forecast, mine, T0)
    assert v is not None
    assert (v["number"], v["state"], v["ahead"], v["counter"]) == ("A002", "waiting", 1, None)
    assert set(v["forecast"]) == {"wait_s", "p10_s", "p90_s"}
    assert v["service_name"] == "企业开办" and v["service_name_en"] == "Business registration"
    text = json.dumps(v)
    assert mine not in text and first not in text and "A001" not in text

    h.run(c.CallNext(T0, 1), c.CallNext(T0, 3))
    v = ticket_view(state, CONFIG, queue_length_forecast, mine, T0)
    assert v is not None
    assert (v["state"], v["counter"], v["counter_name"], v["counter_name_en"]) == (
        "called",
        3,
        "3号窗口",
        "Counter 3",
    )
    assert v["ahead"] is None and v["forecast"] is None
    assert ticket_view(state, CONFIG, queue_length_forecast, "no-such-token-at-all", T0) is None


def test_a_patch_holds_only_what_changed() -> None:
    old = {"queues": {"A": {"waiting": 3}, "B": {"waiting": 1}}, "calls": [1], "x": 1}
    new = {"queues": {"A": {"waiting": 2}, "B": {"waiting": 1}}, "calls": [1], "x": 2}
    assert diff_view(old, new) == {"queues": {"A": {"waiting": 2}}, "x": 2}
    assert diff_view(new, new) == {}
    assert diff_view({}, new) == new


def test_a_scanned_ticket_qr_gives_its_token() -> None:
    t = "Zk3_9Qv-2xYbP0aL1mN7rw"
    assert _token_in(t) == t
    assert _token_in(f"http://192.168.1.10:8080/t/{t}") == t
    assert _token_in(f"https://hall.example.gov.cn/t/{t}/") == t
    assert _token_in("YY-0042") is None  # an appointment code
    assert _token_in("https://example.com/t/short") is None


def test_a_page_that_cannot_keep_up_is_resynchronised_not_buffered() -> None:
    client = Client(None)  # type: ignore[arg-type]
    for i in range(MAX_PENDING):
        client.push(str(i))
    assert len(client.pending) == MAX_PENDING and not client.resync
    client.push("one too many")
    assert len(client.pending) == 0 and client.resync


def test_pages_load_nothing_from_outside_the_daemon() -> None:
    files = [p for p in [*STATIC.rglob("*"), *TEMPLATES.rglob("*")] if p.is_file()]
    assert {p.name for p in files} >= {"screen.js", "kiosk.js", "ticket.js", "feed.js"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), path
        assert not re.search(r"""(src|href)\s*=\s*["']//""", text), path
        assert "@import" not in text and "@font-face" not in text, path
        assert "innerHTML" not in text, path  # data goes in as text, never as markup
