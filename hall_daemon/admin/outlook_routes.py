"""The 7-day outlook (错峰) on the admin page: when each service is crowded, hour by hour.

    GET /admin/outlook       the page (a table per service, drawn by outlook.js)
    GET /admin/api/outlook   the forecaster's outlook with the services' names, as JSON

The figures are the ones the app gets retained over MQTT (`outlook`): expected arrivals and
the expected wait for today's remaining hours and the next six days, from the hall's
weekday × hour history. Worked out on the event loop: the forecaster is not thread-safe,
and an outlook is a few thousand dictionary look-ups.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..hall import Hall
from .pages import bi, template
from .stats_routes import hall_page, serve_layout_files

HALL_KEY = web.AppKey("outlook_hall", Hall)


def outlook_view(hall: Hall) -> dict[str, Any]:
    make = getattr(hall.forecaster, "outlook", None)
    services = [
        {"code": code, "name": spec.name, "name_en": spec.name_en}
        for code, spec in hall.state.services.items()
    ]
    if make is None:
        return {"services": services, "outlook": None}
    return {"services": services, "outlook": make(hall.state, hall.now())}


async def outlook_json(request: web.Request) -> web.Response:
    view = outlook_view(request.app[HALL_KEY])
    return web.json_response(view, headers={"Cache-Control": "no-store"})


async def outlook_page(request: web.Request) -> web.Response:
    content = template("outlook.html").substitute(title=bi("错峰办理", "When to come"))
    return hall_page(
        request,
        title="错峰 Outlook",
        content=content,
        active="/admin/outlook",
        scripts=("outlook.js",),
    )


def add_outlook_routes(app: web.Application, hall: Hall) -> None:
    """Add the outlook routes to `app` (the admin gate, if any, protects them)."""
    app[HALL_KEY] = hall
    serve_layout_files(app)
    app.router.add_get("/admin/outlook", outlook_page)
    app.router.add_get("/admin/api/outlook", outlook_json)
