"""The front end's files, shipped in the package (``taskpoint/ui/static/``), served from memory.

They are read once when the server starts; a request can only name one of these files (an exact
name from this table), so no request path is ever joined to a filesystem path. The HTML pages
get the token query string (``?token=...``) spliced into their asset URLs when one is in use,
because a browser loading ``<script src>`` cannot send an ``Authorization`` header. The 404 page
also gets its title and message (escaped by whoever builds them: they may quote a request path).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
PAGES = {"executions": "index.html", "execution": "execution.html", "not_found": "notfound.html"}
TOKEN_MARK = b"{{TOKEN_QS}}"
TITLE_MARK = b"{{TITLE}}"
MESSAGE_MARK = b"{{MESSAGE}}"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file of the static folder, by exact name."""
    folder = resources.files("taskpoint.ui") / "static"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            assets[entry.name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    missing = [name for name in PAGES.values() if name not in assets]
    if missing:
        raise RuntimeError(f"the taskpoint UI package is incomplete: missing {missing}")
    return assets


def page(assets: dict[str, Asset], name: str, token: str | None) -> bytes:
    """An HTML page with ``?token=...`` (or nothing) in place of its token marks."""
    qs = f"?token={quote(token, safe='')}" if token else ""
    return assets[PAGES[name]].body.replace(TOKEN_MARK, qs.encode())


def not_found_page(
    assets: dict[str, Asset], token: str | None, title: str, message_html: str
) -> bytes:
    """The 404 page: ``title`` (plain text, escaped here) and ``message_html`` (already HTML,
    with anything taken from the request escaped by the caller)."""
    body = page(assets, "not_found", token)
    body = body.replace(TITLE_MARK, html.escape(title).encode())
    return body.replace(MESSAGE_MARK, message_html.encode())
