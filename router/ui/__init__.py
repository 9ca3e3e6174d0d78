"""The `/ui` status page: HTML, JS and CSS from local files (sidecars often have no internet).

The page itself holds no data: it polls `/admin/status` with the admin key the person
enters, which it keeps in the tab's sessionStorage.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["STATIC_DIR", "page"]

STATIC_DIR = Path(str(resources.files("router.ui") / "static"))

# Everything the page loads comes from Turnout itself; nothing may come from elsewhere.
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@cache
def _page_html() -> bytes:
    return (STATIC_DIR / "index.html").read_bytes()


async def page(request: Request) -> Response:
    return HTMLResponse(_page_html(), headers=_HEADERS)
