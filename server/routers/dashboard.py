"""GET /: the dashboard, a static page (server/dashboard/) that calls the token-checked API.

The page, its scripts and styles hold no data and no secret, so they are served without a
token (a browser cannot put a bearer header on a navigation); the page asks for the token, keeps
it in sessionStorage and sends it as `Authorization: Bearer` on every API call, the live feed
included (read with fetch(), since EventSource cannot send headers). Only the files present at
start are served, looked up by name: no path from the URL ever reaches the filesystem.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.errors import ApiError

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere and runs no inline script or style: a script injected
# through an event's text could not run, nor send the token anywhere but this server.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgraded server's page is used
}


def dashboard_files(root: Path = DASHBOARD) -> dict[str, Path]:
    """Every servable file under `root`, by its path relative to it (`vendor/uPlot.esm.js`)."""
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in MEDIA_TYPES
    }


FILES = dashboard_files()
router = APIRouter()


def _serve(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise ApiError(404, "not_found", "no such dashboard file")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The dashboard page."""
    return _serve("index.html")


@router.get("/dashboard/{name:path}", include_in_schema=False)
def asset(name: str) -> FileResponse:
    """The page's scripts, styles and the vendored chart library."""
    return _serve(name)
