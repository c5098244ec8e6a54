"""The statistics pages (效率统计): the page, its JSON and its CSV export.

    GET /admin/stats                                  the page (tables, SVG charts by stats.js)
    GET /admin/api/stats?from=YYYY-MM-DD&to=YYYY-MM-DD the figures as JSON
    GET /admin/stats.csv?from=&to=&by=service|counter|ticket   CSV, UTF-8 with BOM (Excel)

The figures come from the store's events (hall_daemon.stats does the arithmetic). Reads
run on the hall's store thread a batch at a time, so a long report never holds the writer
for more than one short query; the arithmetic runs on a worker thread, never on the loop.
A closed hall day never changes, so its summary (about 1 MiB for a busy day) is cached,
bounded, least recently used first out, and so is each day's historical best; today keeps
its events and reads only those stored since it was last asked.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from ..events import StoredEvent
from ..hall import Hall
from ..stats import (
    LOOKBACK_WEEKS,
    DaySummary,
    PastBest,
    TicketRecord,
    best_of,
    build_report,
    day_bounds,
    find_outliers,
    past_same_weekdays,
    summarize_day,
)
from ..store import Store
from .pages import STATIC, STATIC_PREFIX, bi, esc, render, template

MAX_RANGE_DAYS = 92
CACHE_DAYS = 100  # a 30-day period with its 8 weeks of history fits (≤ ~100 MiB)
READ_CHUNK = 1000  # events per store-thread call: each holds the writer ~20-50 ms
WINDOW_MARGIN = timedelta(hours=2)  # events stamped out of seq order by less are still found
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadPeriod(ValueError):
    """The period asked for cannot be reported on; the message says why."""


class StatsService:
    """Day summaries from the store, cached, and reports built from them."""

    def __init__(
        self, hall: Hall, *, cache_days: int = CACHE_DAYS, lookback_weeks: int = LOOKBACK_WEEKS
    ) -> None:
        self.hall = hall
        self.cache_days = cache_days
        self.lookback_weeks = lookback_weeks
        self._closed: OrderedDict[date, DaySummary] = OrderedDict()
        self._today: _Today | None = None
        self._bests: OrderedDict[date, PastBest] = OrderedDict()
        self._lock = asyncio.Lock()
        self.loaded_days = 0  # reads of a whole day's window (cache misses): tests, benchmark
        self.today_events_read = 0  # events read since, for today

    def today(self) -> date:
        return self.hall.spec.business_day(self.hall.now())

    def period(self, start: str | None, end: str | None) -> tuple[date, date]:
        """Parse and check `from`/`to`: one alone is a single day; neither is today."""
        today = self.today()
        last = _parse_day(end, "to") if end else None
        first = _parse_day(start, "from") if start else (last or today)
        last = last or (first if start else today)
        if first > last:
            raise BadPeriod(f"'from' {first} is after 'to' {last}")
        if last > today:
            raise BadPeriod(f"'to' {last} is in the future (the hall's today is {today})")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise BadPeriod(f"a period may span at most {MAX_RANGE_DAYS} days")
        return first, last

    async def days(self, first: date, last: date) -> list[DaySummary]:
        n = (last - first).days + 1
        return [await self.day(first + timedelta(days=i)) for i in range(n)]

    async def report(self, first: date, last: date) -> dict[str, Any]:
        days = await self.days(first, last)
        weeks = self.lookback_weeks
        # A day's past best only looks at closed days, so once known it never changes.
        bests = {d.day: self._bests[d.day] for d in days if d.day in self._bests}
        for day in bests:
            self._bests.move_to_end(day)
        missing = [d.day for d in days if d.day not in bests]
        history: dict[date, DaySummary] = {}
        for day in missing:
            for p in past_same_weekdays(day, weeks):
                if p not in history:
                    history[p] = await self.day(p)

        def past_bests() -> dict[date, PastBest]:
            return {
                day: best_of([history[p] for p in past_same_weekdays(day, weeks)])
                for day in missing
            }

        for day, table in (await asyncio.to_thread(past_bests)).items():
            bests[day] = self._bests[day] = table
        while len(self._bests) > self.cache_days:
            self._bests.popitem(last=False)
        return await asyncio.to_thread(build_report, self.hall.spec, days, {}, weeks, bests)

    async def day(self, d: date) -> DaySummary:
        async with self._lock:
            return await self._day(d)

    async def _day(self, d: date) -> DaySummary:
        if d >= self.today():
            return await self._today_summary(d)
        cached = self._closed.get(d)
        if cached is not None:
            self._closed.move_to_end(d)
            return cached
        summary = await self._load(d)
        self._closed[d] = summary
        while len(self._closed) > self.cache_days:
            self._closed.popitem(last=False)
        return summary

    async def _today_summary(self, d: date) -> DaySummary:
        """Today grows: keep its events and read only what was stored since last time."""
        t = self._today
        if t is None or t.day != d:
            events, upto = await self._read(d)
            summary = await asyncio.to_thread(summarize_day, self.hall.spec, d, events)
            self._today = _Today(d, upto, events, summary)
            return summary
        last = self.hall.store.last_seq()
        if last == t.upto:
            return t.summary
        since, until = day_bounds(self.hall.spec, d)
        after = t.upto
        while after < last:
            chunk = await self.hall.io(self.hall.store.events_after, after, READ_CHUNK)
            if not chunk:
                break
            t.events.extend(e for e in chunk if since <= e.at < until)
            after = chunk[-1].seq
            self.today_events_read += len(chunk)
        t.upto = after
        t.summary = await asyncio.to_thread(summarize_day, self.hall.spec, d, list(t.events))
        return t.summary

    async def _load(self, d: date) -> DaySummary:
        events, _ = await self._read(d)
        return await asyncio.to_thread(summarize_day, self.hall.spec, d, events)

    async def _read(self, d: date) -> tuple[list[StoredEvent], int]:
        """The events of hall day `d`, and the seq up to which the log was read."""
        since, until = day_bounds(self.hall.spec, d)
        store, io = self.hall.store, self.hall.io
        # The day's seq window by bisection (a few primary-key lookups), then the window
        # read by seq a batch per store-thread call, keeping the events of the day's time
        # range. (`Store.iter_events` filters on time but walks the primary key from the
        # log's start for every day: seconds per day on a month of a busy hall.)
        last = await io(store.last_seq)
        lo = await io(first_seq_at, store, since - WINDOW_MARGIN, last)
        hi = await io(first_seq_at, store, until + WINDOW_MARGIN, last)
        events: list[StoredEvent] = []
        after = lo - 1
        while after < hi - 1:
            chunk = await io(store.events_after, after, min(READ_CHUNK, hi - 1 - after))
            if not chunk:
                break
            events.extend(e for e in chunk if since <= e.at < until)
            after = chunk[-1].seq
        self.loaded_days += 1
        return events, hi - 1


@dataclass
class _Today:
    day: date
    upto: int  # the log has been read up to this seq
    events: list[StoredEvent]
    summary: DaySummary


def first_seq_at(store: Store, when: datetime, last: int) -> int:
    """The first seq whose event is at or after `when` (`last` + 1 if none), by bisection.

    Event times follow seq: the single writer stores commands in the order it runs them,
    each stamped by its adapter's clock as it arrives; the window's margin covers the
    small inversions between adapters.
    """
    lo, hi = 1, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = store.events_after(mid - 1, limit=1)
        if not found or found[0].at >= when:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _parse_day(text: str, name: str) -> date:
    if not _DATE.match(text):
        raise BadPeriod(f"'{name}' must be a date as YYYY-MM-DD, got {text[:40]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadPeriod(f"'{name}' is not a calendar date: {text!r}") from None


# -- CSV --------------------------------------------------------------------------------

Column = tuple[str, str, Callable[[dict[str, Any]], object]]


def _dist(kind: str, key: str) -> Callable[[dict[str, Any]], object]:
    return lambda r: r[kind][key]


def _stars(k: int) -> Callable[[dict[str, Any]], object]:
    return lambda r: r["ratings"]["dist"][k - 1]


_ROW_COLUMNS: list[Column] = [
    ("名称", "name", lambda r: r["name"]),
    ("英文名", "name_en", lambda r: r["name_en"]),
    ("取号", "issued", lambda r: r["issued"]),
    ("叫号", "called", lambda r: r["called"]),
    ("办结", "served", lambda r: r["served"]),
    ("过号", "no_show", lambda r: r["no_show"]),
    ("取消", "cancelled", lambda r: r["cancelled"]),
    ("转移", "transferred", lambda r: r["transferred"]),
    ("未办结", "unfinished", lambda r: r["unfinished"]),
    ("平均等候秒", "wait_mean_s", _dist("wait", "mean")),
    ("等候中位秒", "wait_median_s", _dist("wait", "median")),
    ("等候P90秒", "wait_p90_s", _dist("wait", "p90")),
    ("平均办理秒", "handle_mean_s", _dist("handle", "mean")),
    ("办理中位秒", "handle_median_s", _dist("handle", "median")),
    ("办理P90秒", "handle_p90_s", _dist("handle", "p90")),
    ("评价数", "ratings", lambda r: r["ratings"]["n"]),
    ("平均评分", "rating_mean", lambda r: r["ratings"]["mean"]),
    *[(f"{k}分", f"rated_{k}", _stars(k)) for k in range(1, 6)],
    ("历史同期最多办结", "best_served", lambda r: r["best"]["served"]),
    ("历史同期最短平均等候秒", "best_mean_wait_s", lambda r: r["best"]["mean_wait"]),
]
_COUNTER_EXTRA: list[Column] = [
    ("办理时长比预期", "handle_ratio", lambda r: (r["outlier"] or {}).get("ratio")),
    ("偏离z", "z", lambda r: (r["outlier"] or {}).get("z")),
    ("异常", "outlier", lambda r: _yes((r["outlier"] or {}).get("flag"))),
]


def _yes(flag: object) -> str:
    return "yes" if flag else ""


def _cell(value: object) -> object:
    return "" if value is None else value


def _csv_text(header: list[str], rows: list[list[object]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    # The BOM makes Excel read UTF-8 (else Chinese turns to mojibake).
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def report_csv(report: dict[str, Any], by: str) -> bytes:
    """The report's service or counter table as CSV, both languages in the header."""
    key_col = ("服务", "service") if by == "service" else ("窗口", "counter")
    if by == "counter":  # counters issue nothing: the dispensers do
        cols = [col for col in _ROW_COLUMNS if col[1] != "issued"] + _COUNTER_EXTRA
    else:
        cols = _ROW_COLUMNS
    header = [f"{key_col[0]} {key_col[1]}"] + [f"{zh} {en}" for zh, en, _ in cols]
    rows = [[r["key"], *(get(r) for _, _, get in cols)] for r in report[f"{by}s"]]
    return _csv_text(header, rows)


_TICKET_HEADER = [
    ("日期", "day"),
    ("号码", "number"),
    ("取号服务", "service"),
    ("取号时", "issued_hour"),
    ("优先", "priority"),
    ("渠道", "channel"),
    ("首次叫号窗口", "first_counter"),
    ("等候秒", "wait_s"),
    ("结果", "outcome"),
    ("办结服务", "end_service"),
    ("办结窗口", "end_counter"),
    ("办理秒", "handle_s"),
    ("办理时", "handle_hour"),
    ("转移", "transfers"),
    ("评分", "rating"),
    ("预期办理秒", "expected_s"),
    ("偏离z", "z"),
    ("异常", "outlier"),
]


def tickets_csv(records: list[TicketRecord]) -> bytes:
    outliers = find_outliers(records)["tickets"]
    rows: list[list[object]] = []
    for r in sorted(records, key=lambda r: (r.day, r.number)):
        o = outliers.get((r.day, r.number), {})
        transfers = " ".join(f"{s}@{c}" if c is not None else s for s, c in r.transfers)
        rows.append(
            [
                r.day.isoformat(),
                r.number,
                r.service,
                r.issued_hour,
                _yes(r.priority),
                r.channel,
                r.first_counter,
                None if r.wait_s is None else round(r.wait_s, 1),
                r.outcome,
                r.end_service,
                r.end_counter,
                None if r.handle_s is None else round(r.handle_s, 1),
                r.handle_hour,
                transfers,
                r.rating,
                o.get("expected_s"),
                o.get("z"),
                _yes(o.get("flag")),
            ]
        )
    return _csv_text([f"{zh} {en}" for zh, en in _TICKET_HEADER], rows)


# -- routes -----------------------------------------------------------------------------

STATS_KEY = web.AppKey("stats", StatsService)


def _bad(request: web.Request, exc: BadPeriod) -> web.Response:
    if request.path.startswith("/admin/api/"):
        return web.json_response({"error": "bad-period", "message": str(exc)}, status=400)
    return web.Response(text=f"400 Bad Request: {exc}\n", status=400)


async def stats_json(request: web.Request) -> web.Response:
    svc = request.app[STATS_KEY]
    try:
        first, last = svc.period(request.query.get("from"), request.query.get("to"))
    except BadPeriod as exc:
        return _bad(request, exc)
    report = await svc.report(first, last)
    report["today"] = svc.today().isoformat()
    return web.json_response(report, headers={"Cache-Control": "no-store"})


async def stats_csv(request: web.Request) -> web.Response:
    svc = request.app[STATS_KEY]
    by = request.query.get("by", "service")
    try:
        if by not in ("service", "counter", "ticket"):
            raise BadPeriod(f"'by' must be service, counter or ticket, got {by[:40]!r}")
        first, last = svc.period(request.query.get("from"), request.query.get("to"))
    except BadPeriod as exc:
        return _bad(request, exc)
    if by == "ticket":
        days = await svc.days(first, last)
        records = [r for d in days for r in d.tickets]
        body = await asyncio.to_thread(tickets_csv, records)
    else:
        body = report_csv(await svc.report(first, last), by)
    name = f"hall-stats-{by}-{first}_{last}.csv"
    return web.Response(
        body=body,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


async def stats_page(request: web.Request) -> web.Response:
    svc = request.app[STATS_KEY]
    content = template("stats.html").substitute(
        today=esc(svc.today().isoformat()),
        max_days=MAX_RANGE_DAYS,
        title=bi("效率统计", "Efficiency statistics"),
    )
    return hall_page(
        request,
        title="效率统计 Statistics",
        content=content,
        active="/admin/stats",
        scripts=("stats.js",),
        styles=("stats.css",),
    )


def hall_page(
    request: web.Request,
    *,
    title: str,
    content: str,
    active: str,
    scripts: tuple[str, ...] = (),
    styles: tuple[str, ...] = (),
) -> web.Response:
    """A page in the admin layout (with its bar and the hall's name) when the admin is set
    up, else in the bare layout (tests that mount only these routes)."""
    from . import ADMIN_KEY  # the package imports this module: resolve at request time

    admin = request.app.get(ADMIN_KEY)
    if admin is not None:
        return admin.page(
            request,
            title=f"{title} · {admin.config.hall.name}",
            content=content,
            active=active,
            scripts=scripts,
            styles=styles,
        )
    return render(title=title, content=content, scripts=scripts, styles=styles)


def serve_layout_files(app: web.Application) -> None:
    """In a bare app (tests that mount only some admin pages), serve the layout's static files
    the admin would otherwise serve; once, whichever page routes come first."""
    from . import ADMIN_KEY

    if ADMIN_KEY not in app and "admin_static" not in app.router.named_resources():
        app.router.add_static(STATIC_PREFIX, STATIC, name="admin_static")


def add_stats_routes(app: web.Application, hall: Hall) -> StatsService:
    """Add the statistics routes to `app` (the admin gate, if any, protects them)."""

    service = StatsService(hall)
    app[STATS_KEY] = service
    serve_layout_files(app)
    app.router.add_get("/admin/stats", stats_page)
    app.router.add_get("/admin/api/stats", stats_json)
    app.router.add_get("/admin/stats.csv", stats_csv)
    return service
