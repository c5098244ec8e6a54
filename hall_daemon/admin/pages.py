"""The admin pages' shared layout: one base template, one stylesheet, a navigation bar.

Other admin pages (statistics, receipts) render through `render_page` so they get the same
header, navigation, CSRF token (a <meta> the page's scripts send back) and security headers.
"""

from __future__ import annotations

import hashlib
import html
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
STATIC_PREFIX = "/static/admin/"

# Admin pages load nothing from elsewhere and run only their own scripts; forms post here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class NavLink:
    href: str
    zh: str
    en: str


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def bi(zh: str, en: str) -> str:
    """Both languages; the page's language switch (admin.css) shows one or both."""
    return f'<span class="zh">{esc(zh)}</span><span class="en">{esc(en)}</span>'


@cache
def template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


@cache
def static_version(name: str) -> str:
    """A hash of a static file, appended to its URL: an upgrade is never served from cache."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    return f"{STATIC_PREFIX}{name}?v={static_version(name)}"


def render(
    *,
    title: str,
    content: str,
    nav: list[NavLink] | None = None,
    active: str = "",
    csrf: str = "",
    hall_name: str = "",
    scripts: tuple[str, ...] = (),
    styles: tuple[str, ...] = (),
    status: int = 200,
    extra_static: dict[str, str] | None = None,
) -> web.Response:
    """An admin page. `scripts`/`styles` name files in admin/static (or full /static/ URLs
    from `extra_static`, e.g. the stats helper's own files)."""

    def url(name: str) -> str:
        if name.startswith("/"):
            return esc(name)
        return esc(static_url(name))

    links = "".join(
        f'<a href="{esc(n.href)}"{" class=active" if n.href == active else ""}>{bi(n.zh, n.en)}</a>'
        for n in nav or []
    )
    page = template("base.html").substitute(
        title=esc(title),
        hall=esc(hall_name),
        csrf=esc(csrf),
        css=url("admin.css"),
        common_js=url("admin.js"),
        styles="".join(f'<link rel="stylesheet" href="{url(s)}">' for s in styles),
        scripts="".join(f'<script src="{url(s)}" defer></script>' for s in scripts),
        nav=links,
        logout=bi("退出", "Log out") if nav else "",
        logout_hidden="" if nav else "hidden",
        content=content,
    )
    return web.Response(
        text=page, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )
